//! Small-sample statistics for campaign results, pure: Student's t distribution (its
//! quantile through the regularized incomplete beta function), Welch's confidence
//! interval of a difference of two means, and the verdict on a campaign's net effect.
//!
//! Everything is `f64`: these are estimates, not booked money.

use crate::clv::ln_gamma;

/// Relative precision the continued fraction stops at.
const EPS: f64 = 1e-15;
/// Guards the continued fraction's denominators against zero (modified Lentz).
const TINY: f64 = 1e-300;
/// Terms of the continued fraction before giving up (it converges in O(√max(a, b))).
const MAX_TERMS: usize = 10_000;
/// Above these degrees of freedom the t quantile is the normal one corrected by the
/// Cornish–Fisher expansion in 1/ν (error below 1e-15 there).
const LARGE_DF: f64 = 1e5;

/// The continued fraction of I_x(a, b) (Numerical Recipes' `betacf`, modified Lentz),
/// good for x < (a + 1)/(a + b + 2).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=MAX_TERMS {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < EPS {
            return h;
        }
    }
    f64::NAN
}

/// The regularized incomplete beta function and its complement, (I_x(a, b), 1 − I_x(a, b)),
/// for a, b > 0 and 0 ≤ x ≤ 1 given with y = 1 − x (passed separately so that a tail
/// near x = 1 keeps its precision). The smaller of the two is computed directly, never
/// as 1 minus the other. NaN outside the domain.
pub fn incomplete_beta(a: f64, b: f64, x: f64, y: f64) -> (f64, f64) {
    if !(a > 0.0 && b > 0.0 && (0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y)) {
        return (f64::NAN, f64::NAN);
    }
    if x == 0.0 {
        return (0.0, 1.0);
    }
    if y == 0.0 {
        return (1.0, 0.0);
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * y.ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        let i = front * beta_fraction(a, b, x) / a;
        (i, 1.0 - i)
    } else {
        let j = front * beta_fraction(b, a, y) / b;
        (1.0 - j, j)
    }
}

/// P(T > t) for Student's t with `df` > 0 degrees of freedom, t ≥ 0:
/// ½ · I_{ν/(ν+t²)}(ν/2, ½).
fn upper_tail(t: f64, df: f64) -> f64 {
    let t2 = t * t;
    let (x, y) = (df / (df + t2), t2 / (df + t2));
    0.5 * incomplete_beta(df / 2.0, 0.5, x, y).0
}

/// The distribution function of Student's t with `df` > 0 degrees of freedom
/// (`f64::INFINITY`: the standard normal).
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    if df.is_nan() || df <= 0.0 || t.is_nan() {
        return f64::NAN;
    }
    if df.is_infinite() {
        return 0.5 * erfc(-t / std::f64::consts::SQRT_2);
    }
    let tail = upper_tail(t.abs(), df);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The `p` quantile of Student's t with `df` > 0 degrees of freedom (`f64::INFINITY`:
/// the standard normal), 0 < p < 1; NaN outside. Solved by bisection on the upper tail
/// (the incomplete beta function), so it holds for fractional degrees of freedom, as
/// Welch–Satterthwaite gives them; above 10⁵ degrees of freedom, the Cornish–Fisher
/// expansion around the normal quantile.
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    if !(p > 0.0 && p < 1.0) || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, df);
    }
    if p == 0.5 {
        return 0.0;
    }
    if df >= LARGE_DF {
        let z = normal_quantile(p);
        if df.is_infinite() {
            return z;
        }
        let z2 = z * z;
        let g1 = (z2 + 1.0) * z / 4.0;
        let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
        let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
        return z + g1 / df + g2 / (df * df) + g3 / (df * df * df);
    }
    let tail = 1.0 - p;
    let mut hi = 2.0;
    while upper_tail(hi, df) > tail {
        hi *= 2.0;
        if hi > 1e300 {
            return f64::INFINITY;
        }
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if upper_tail(mid, df) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// erfc(x) (Numerical Recipes' Chebyshev fit, relative error below 1.2e-7): the normal
/// distribution function, for infinite degrees of freedom.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The standard normal quantile, 0 < p < 1 (Acklam's rational approximation, relative
/// error below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    if !(p > 0.0 && p < 1.0) {
        return f64::NAN;
    }
    let low = 0.02425;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

/// One group's figures: members, their mean, and the sum of squared deviations from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub n: u64,
    pub mean: f64,
    /// Σ (xᵢ − mean)².
    pub squared_deviations: f64,
}

impl Sample {
    /// The unbiased variance (n − 1 in the denominator); NaN below two members.
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            f64::NAN
        } else {
            self.squared_deviations.max(0.0) / (self.n - 1) as f64
        }
    }
}

/// A difference of means with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// The standard error of the estimate.
    pub standard_error: f64,
    /// Welch–Satterthwaite degrees of freedom (infinite when the standard error is 0).
    pub df: f64,
}

/// Welch's `confidence` (e.g. 0.95) interval of mean(a) − mean(b): standard error
/// √(s²ₐ/nₐ + s²_b/n_b), Welch–Satterthwaite degrees of freedom
/// (s²ₐ/nₐ + s²_b/n_b)² / ((s²ₐ/nₐ)²/(nₐ−1) + (s²_b/n_b)²/(n_b−1)), and the Student-t
/// quantile at (1 + confidence)/2. `None` when a group has fewer than two members (its
/// variance is unknown). Two groups without any spread give the estimate as both ends.
pub fn welch_interval(a: &Sample, b: &Sample, confidence: f64) -> Option<Interval> {
    if a.n < 2 || b.n < 2 || !(confidence > 0.0 && confidence < 1.0) {
        return None;
    }
    let (va, vb) = (a.variance() / a.n as f64, b.variance() / b.n as f64);
    let estimate = a.mean - b.mean;
    let se2 = va + vb;
    if se2 <= 0.0 {
        return Some(Interval {
            estimate,
            low: estimate,
            high: estimate,
            standard_error: 0.0,
            df: f64::INFINITY,
        });
    }
    let df = se2 * se2 / (va * va / (a.n - 1) as f64 + vb * vb / (b.n - 1) as f64);
    let se = se2.sqrt();
    let half = student_t_quantile((1.0 + confidence) / 2.0, df) * se;
    Some(Interval {
        estimate,
        low: estimate - half,
        high: estimate + half,
        standard_error: se,
        df,
    })
}

/// What a campaign earned, judged on its net effect's interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The whole interval lies above zero.
    Gain,
    /// The whole interval lies below zero.
    Loss,
    /// The interval holds zero, or there is none.
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Gain => "gain",
            Verdict::Loss => "loss",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// `gain` when low > 0, `loss` when high < 0, else (zero inside, or no interval)
    /// `inconclusive`.
    pub fn of(interval: Option<(f64, f64)>) -> Self {
        match interval {
            Some((low, _)) if low > 0.0 => Verdict::Gain,
            Some((_, high)) if high < 0.0 => Verdict::Loss,
            _ => Verdict::Inconclusive,
        }
    }
}

/// The net effect's interval: the uplift per member's interval scaled to the treated
/// members (incremental revenue), less what the points cost (a known amount).
pub fn net_interval(uplift: &Interval, treated: u64, points_cost: f64) -> (f64, f64) {
    let n = treated as f64;
    (uplift.low * n - points_cost, uplift.high * n - points_cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} is not {expected} ± {tolerance}"
        );
    }

    #[test]
    fn t_quantiles_match_published_tables() {
        // Two-sided 95 % critical values (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2).
        for (df, t) in [
            (1.0, 12.706205),
            (2.0, 4.302653),
            (3.0, 3.182446),
            (5.0, 2.570582),
            (6.0, 2.446912),
            (10.0, 2.228139),
            (30.0, 2.042272),
            (100.0, 1.983972),
        ] {
            close(student_t_quantile(0.975, df), t, 1e-6);
        }
        close(student_t_quantile(0.95, 10.0), 1.812461, 1e-6);
        close(student_t_quantile(0.995, 30.0), 2.749996, 1e-6);
        close(student_t_quantile(0.025, 10.0), -2.228139, 1e-6);
        close(student_t_quantile(0.5, 7.0), 0.0, 0.0);
    }

    #[test]
    fn t_quantile_tends_to_the_normal_one() {
        close(student_t_quantile(0.975, f64::INFINITY), 1.959964, 1e-6);
        close(normal_quantile(0.975), 1.959964, 1e-6);
        close(normal_quantile(0.995), 2.575829, 1e-6);
        close(normal_quantile(0.01), -2.326348, 1e-6);
        // 10⁶ degrees of freedom (mpmath: 1.95996635681).
        close(student_t_quantile(0.975, 1e6), 1.959_966_357, 1e-8);
        // Either side of the switch to the expansion agrees (to Acklam's precision).
        close(
            student_t_quantile(0.975, LARGE_DF * 0.999_999),
            student_t_quantile(0.975, LARGE_DF),
            5e-9,
        );
        let mut last = f64::INFINITY;
        for df in [1.0, 2.0, 4.5, 10.0, 50.0, 1e3, 1e4, 1e5, 1e7] {
            let t = student_t_quantile(0.975, df);
            assert!(t < last && t > 1.959964, "df {df}: {t}");
            last = t;
        }
    }

    #[test]
    fn fractional_degrees_of_freedom_interpolate_the_distribution() {
        // mpmath (30 digits): the t(4.5) distribution's 0.975 quantile, solving
        // 1 − ½·betainc(ν/2, ½, 0, ν/(ν+t²), regularized) = 0.975: 2.6589123472.
        close(student_t_quantile(0.975, 4.5), 2.658_912, 1e-6);
        // A quantile inverts the distribution function.
        for df in [0.7, 1.3, 4.4118, 17.25] {
            for p in [0.6, 0.9, 0.975, 0.999] {
                close(student_t_cdf(student_t_quantile(p, df), df), p, 1e-12);
            }
        }
    }

    #[test]
    fn t_distribution_function_at_known_points() {
        // ν = 1 is Cauchy: F(1) = 3/4; ν = 2: F(t) = ½ + t / (2√(2 + t²)).
        close(student_t_cdf(1.0, 1.0), 0.75, 1e-14);
        close(student_t_cdf(-1.0, 1.0), 0.25, 1e-14);
        close(
            student_t_cdf(3.0, 2.0),
            0.5 + 3.0 / (2.0 * 11f64.sqrt()),
            1e-14,
        );
        close(student_t_cdf(0.0, 9.0), 0.5, 1e-15);
        close(student_t_cdf(1.959964, f64::INFINITY), 0.975, 1e-6);
    }

    #[test]
    fn incomplete_beta_at_closed_forms() {
        // I_x(1, 1) = x; I_x(a, 1) = xᵃ; I_x(1, b) = 1 − (1 − x)ᵇ.
        close(incomplete_beta(1.0, 1.0, 0.3, 0.7).0, 0.3, 1e-14);
        close(
            incomplete_beta(2.5, 1.0, 0.4, 0.6).0,
            0.4f64.powf(2.5),
            1e-14,
        );
        close(incomplete_beta(1.0, 3.0, 0.2, 0.8).1, 0.8f64.powi(3), 1e-14);
        // The small tail near x = 1 is computed directly, not as 1 − (almost 1).
        let (_, tail) = incomplete_beta(1.0, 2.0, 1.0 - 1e-9, 1e-9);
        close(tail / 1e-18, 1.0, 1e-6);
        assert!(incomplete_beta(-1.0, 1.0, 0.5, 0.5).0.is_nan());
    }

    #[test]
    fn welch_interval_by_hand() {
        // Treatment 100, 120, 140, 160: mean 130, Σd² = 2000 (s² = 666.67).
        // Control 40, 60, 80, 100: mean 70, Σd² = 2000. Equal variances and sizes, so
        // ν = 2(n − 1) = 6 exactly; se = √(2 · 666.67/4) = 18.257419;
        // t(0.975, 6) = 2.446912: 60 ± 44.674294.
        let t = Sample {
            n: 4,
            mean: 130.0,
            squared_deviations: 2000.0,
        };
        let c = Sample {
            n: 4,
            mean: 70.0,
            squared_deviations: 2000.0,
        };
        let i = welch_interval(&t, &c, 0.95).unwrap();
        close(i.estimate, 60.0, 1e-12);
        close(i.df, 6.0, 1e-12);
        close(i.standard_error, 18.257_419, 1e-6);
        close(i.low, 15.325_706, 1e-5);
        close(i.high, 104.674_294, 1e-5);
    }

    #[test]
    fn welch_interval_with_unequal_variances() {
        // Treatment n 4, s² 666.67; control n 4, s² 166.67 (40, 50, 60, 70):
        // se² = 166.667 + 41.667 = 208.333; ν = 208.333² / (166.667²/3 + 41.667²/3)
        //     = 43402.78 / 9837.96 = 4.411765 (= 75/17); mean difference 75.
        let t = Sample {
            n: 4,
            mean: 130.0,
            squared_deviations: 2000.0,
        };
        let c = Sample {
            n: 4,
            mean: 55.0,
            squared_deviations: 500.0,
        };
        let i = welch_interval(&t, &c, 0.95).unwrap();
        close(i.df, 75.0 / 17.0, 1e-9);
        close(i.standard_error, 208.333_333_f64.sqrt(), 1e-6);
        // mpmath: t(0.975, 75/17) = 2.67717357847, between the table's 4 and 5.
        let q = student_t_quantile(0.975, 75.0 / 17.0);
        close(q, 2.677_174, 1e-6);
        close(i.low, 75.0 - q * i.standard_error, 1e-9);
        close(i.high, 75.0 + q * i.standard_error, 1e-9);
    }

    #[test]
    fn welch_interval_needs_two_members_a_side_and_tolerates_no_spread() {
        let two = Sample {
            n: 2,
            mean: 5.0,
            squared_deviations: 0.0,
        };
        let one = Sample {
            n: 1,
            mean: 3.0,
            squared_deviations: 0.0,
        };
        assert_eq!(welch_interval(&two, &one, 0.95), None);
        assert_eq!(welch_interval(&one, &two, 0.95), None);
        let flat = welch_interval(&two, &Sample { mean: 0.0, ..two }, 0.95).unwrap();
        assert_eq!((flat.estimate, flat.low, flat.high), (5.0, 5.0, 5.0));
        // One group without spread: ν is the other's n − 1.
        let spread = Sample {
            n: 11,
            mean: 2.0,
            squared_deviations: 40.0,
        };
        let i = welch_interval(&spread, &Sample { n: 5, ..two }, 0.95).unwrap();
        close(i.df, 10.0, 1e-12);
        close(i.high - i.estimate, 2.228139 * (4.0f64 / 11.0).sqrt(), 1e-6);
    }

    #[test]
    fn verdicts_follow_the_net_interval() {
        let uplift = Interval {
            estimate: 60.0,
            low: 15.325_706,
            high: 104.674_294,
            standard_error: 18.257_419,
            df: 6.0,
        };
        // 4 treated members, 0.40 of points: 4 × 15.325706 − 0.4 .. 4 × 104.674294 − 0.4.
        let (low, high) = net_interval(&uplift, 4, 0.4);
        close(low, 60.902_824, 1e-6);
        close(high, 418.297_176, 1e-6);
        assert_eq!(Verdict::of(Some((low, high))), Verdict::Gain);
        // Points costing 400 put zero inside; 500 puts the whole interval below.
        assert_eq!(
            Verdict::of(Some(net_interval(&uplift, 4, 400.0))),
            Verdict::Inconclusive
        );
        assert_eq!(
            Verdict::of(Some(net_interval(&uplift, 4, 500.0))),
            Verdict::Loss
        );
        assert_eq!(Verdict::of(None), Verdict::Inconclusive);
        assert_eq!(Verdict::of(Some((0.0, 3.0))), Verdict::Inconclusive);
        assert_eq!(Verdict::Loss.as_str(), "loss");
    }
}
