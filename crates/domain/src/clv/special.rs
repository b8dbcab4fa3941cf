//! The two special functions the models need, written here rather than pulled in as a
//! crate: ln Γ (both models' likelihoods) and ln ₂F₁ on [0, 1) (BG/NBD's conditional
//! expectations). Both only ever see positive parameters, which keeps them short.

/// Lanczos coefficients for g = 7, n = 9 (Numerical Recipes / Godfrey): relative error
/// about 1e-15 for positive arguments, far below what a likelihood fit can resolve.
const LANCZOS_G: f64 = 7.0;
const LANCZOS: [f64; 9] = [
    0.999_999_999_999_809_9,
    676.520_368_121_885_1,
    -1_259.139_216_722_402_8,
    771.323_428_777_653_1,
    -176.615_029_162_140_6,
    12.507_343_278_686_905,
    -0.138_571_095_265_720_12,
    9.984_369_578_019_572e-6,
    1.505_632_735_149_311_6e-7,
];

/// ln Γ(x) for x > 0 (NaN otherwise).
pub fn ln_gamma(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return f64::NAN;
    }
    if x < 0.5 {
        // Γ(x) = Γ(x + 1) / x: the Lanczos sum is accurate from 0.5 up.
        return ln_gamma(x + 1.0) - x.ln();
    }
    let x = x - 1.0;
    let t = x + LANCZOS_G + 0.5;
    let sum = LANCZOS[1..]
        .iter()
        .enumerate()
        .fold(LANCZOS[0], |acc, (i, c)| acc + c / (x + (i + 1) as f64));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Terms are rescaled by this factor when the running sum passes it, so that
/// ₂F₁(r + x, b + x; …) for a heavy buyer (it grows like (1 − z)^−x) cannot overflow.
const RESCALE: f64 = 1e250;
/// Enough terms for z up to about 0.9999 at full precision; beyond, NaN is returned
/// rather than a silently truncated sum.
const MAX_TERMS: usize = 1_000_000;

/// ln ₂F₁(a, b; c; z) for a, b, c > 0 and 0 ≤ z < 1, by the Gauss power series.
///
/// Every term is positive for such arguments, so the plain series is stable (no
/// cancellation); it converges geometrically with ratio → z. NaN outside that domain
/// or when the series has not converged within `MAX_TERMS` terms.
pub fn ln_hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    if !(a > 0.0 && b > 0.0 && c > 0.0 && (0.0..1.0).contains(&z)) {
        return f64::NAN;
    }
    let mut log_scale = 0.0;
    let mut sum = 1.0;
    let mut term = 1.0;
    for n in 0..MAX_TERMS {
        let n = n as f64;
        let ratio = (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        term *= ratio;
        sum += term;
        if sum > RESCALE {
            sum /= RESCALE;
            term /= RESCALE;
            log_scale += RESCALE.ln();
        }
        // The ratios tend to z, from above or below; once they are below 1, the tail
        // is at most term · q / (1 − q) with q the larger of the ratio and z. Stop when
        // that is below the last bit of the sum.
        let q = ratio.max(z);
        if q < 1.0 && term * q / (1.0 - q) <= 1e-17 * sum {
            return log_scale + sum.ln();
        }
    }
    f64::NAN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        assert!((ln_gamma(1.0)).abs() < 1e-14);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-14);
        // ln 100! − ln 99! = ln 100.
        assert!((ln_gamma(101.0) - ln_gamma(100.0) - 100f64.ln()).abs() < 1e-11);
        // scipy.special.gammaln(0.01) = 4.599479878042022
        assert!((ln_gamma(0.01) - 4.599_479_878_042_022).abs() < 1e-13);
        assert!(ln_gamma(0.0).is_nan());
    }

    #[test]
    fn hyp2f1_matches_closed_forms() {
        // ₂F₁(1, 1; 2; z) = −ln(1 − z) / z
        for z in [0.1f64, 0.5, 0.9, 0.99] {
            let exact = (-(1.0 - z).ln() / z).ln();
            assert!(
                (ln_hyp2f1(1.0, 1.0, 2.0, z) - exact).abs() < 1e-12,
                "z = {z}"
            );
        }
        // ₂F₁(a, b; b; z) = (1 − z)^−a, large a to exercise the rescaling.
        let (a, z) = (3000.0, 0.9f64);
        assert!((ln_hyp2f1(a, 2.5, 2.5, z) - (-a * (1.0 - z).ln())).abs() < 1e-9);
        assert_eq!(ln_hyp2f1(1.0, 1.0, 2.0, 0.0), 0.0);
        assert!(ln_hyp2f1(1.0, 1.0, 2.0, 1.0).is_nan());
    }
}

/// ψ(x) = d/dx ln Γ(x) for x > 0: the recurrence ψ(x) = ψ(x+1) − 1/x up to x ≥ 10,
/// then the asymptotic series (error about 1e-14 there).
pub fn digamma(mut x: f64) -> f64 {
    let mut shift = 0.0;
    while x < 10.0 {
        shift -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let series = inv2
        * (1.0 / 12.0
            - inv2
                * (1.0 / 120.0
                    - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 * (1.0 / 132.0)))));
    shift + x.ln() - 0.5 * inv - series
}

#[cfg(test)]
mod digamma_tests {
    use super::*;

    #[test]
    fn digamma_matches_known_values_and_the_derivative_of_ln_gamma() {
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-12);
        assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-12);
        for x in [0.01f64, 0.3, 2.5, 7.0, 40.0, 1234.5] {
            let h = 1e-5 * x.max(1.0);
            let numeric = (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            assert!(
                (digamma(x) - numeric).abs() < 1e-6 * (1.0 + numeric.abs()),
                "{x}"
            );
        }
    }
}
