//! Weekly sales forecasts by exponential smoothing, and their backtest.
//!
//! Three models of the additive-error family (Hyndman & Athanasopoulos, *Forecasting:
//! Principles and Practice*, ch. 8), each fitted by choosing its smoothing parameters on
//! a grid to minimise the sum of squared one-step-ahead errors:
//!
//! - simple exponential smoothing (SES): a level, `l_t = α y_t + (1 − α) l_{t−1}`, which
//!   forecasts itself flat;
//! - Holt's damped trend: a level and a trend damped by `φ` (`φ = 1` is Holt's linear
//!   trend), `ŷ_{t+h} = l_t + (φ + … + φ^h) b_t`;
//! - additive Holt–Winters with a yearly season of 52 weeks, which needs two years of
//!   history: one to start the seasonal indices, one to see them at work.
//!
//! [`choose`] picks among them honestly (see there); [`backtest`] refits the chosen model
//! on the history less a held-out tail and scores its forecasts of that tail by the mean
//! absolute percentage error, leaving out weeks that sold nothing (their percentage error
//! is undefined). Values are `f64`: these are estimates, rounded to money by the caller.

/// Weeks of a yearly season.
pub const SEASON: usize = 52;
/// The shortest history a forecast is made from.
pub const MIN_HISTORY: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SimpleExponentialSmoothing,
    HoltDampedTrend,
    HoltWintersAdditive,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::SimpleExponentialSmoothing => "simple_exponential_smoothing",
            Method::HoltDampedTrend => "holt_damped_trend",
            Method::HoltWintersAdditive => "holt_winters_additive",
        }
    }

    /// Weeks of history the method needs to be fitted.
    pub fn min_history(self) -> usize {
        match self {
            Method::SimpleExponentialSmoothing => 2,
            Method::HoltDampedTrend => 3,
            Method::HoltWintersAdditive => 2 * SEASON,
        }
    }

    /// Parameters estimated from the data, initial states included (for AICc).
    fn parameters(self) -> usize {
        match self {
            Method::SimpleExponentialSmoothing => 2, // α, l0
            Method::HoltDampedTrend => 5,            // α, β, φ, l0, b0
            Method::HoltWintersAdditive => 3 + 2 + (SEASON - 1),
        }
    }
}

/// Smoothing parameters (those the method does not use are `None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub alpha: f64,
    pub beta: Option<f64>,
    pub phi: Option<f64>,
    pub gamma: Option<f64>,
}

/// A model run over a series: its parameters, final state and one-step errors.
#[derive(Debug, Clone)]
pub struct Fit {
    pub method: Method,
    pub params: Params,
    level: f64,
    trend: f64,
    /// Seasonal indices by `t mod SEASON` (empty without a season).
    season: Vec<f64>,
    /// Length of the series fitted.
    n: usize,
    /// The first time index with a one-step error.
    pub errors_from: usize,
    /// One-step-ahead errors `y_t − ŷ_{t|t−1}` for `t = errors_from..n`.
    pub errors: Vec<f64>,
}

impl Fit {
    /// Sum of squared one-step errors from time `from` on.
    pub fn sse_from(&self, from: usize) -> f64 {
        let skip = from.saturating_sub(self.errors_from);
        self.errors.iter().skip(skip).map(|e| e * e).sum()
    }

    /// Sum of squared one-step errors.
    pub fn sse(&self) -> f64 {
        self.sse_from(0)
    }

    /// Forecasts for the `h` weeks after the series.
    pub fn forecast(&self, h: usize) -> Vec<f64> {
        let phi = self.params.phi.unwrap_or(1.0);
        let mut damped = 0.0;
        let mut power = 1.0;
        (1..=h)
            .map(|k| match self.method {
                Method::SimpleExponentialSmoothing => self.level,
                Method::HoltDampedTrend => {
                    power *= phi;
                    damped += power;
                    self.level + damped * self.trend
                }
                Method::HoltWintersAdditive => {
                    self.level + k as f64 * self.trend + self.season[(self.n - 1 + k) % SEASON]
                }
            })
            .collect()
    }
}

/// Simple exponential smoothing with `alpha`, started at the first value.
pub fn ses(y: &[f64], alpha: f64) -> Option<Fit> {
    if y.len() < Method::SimpleExponentialSmoothing.min_history() {
        return None;
    }
    let mut level = y[0];
    let mut errors = Vec::with_capacity(y.len() - 1);
    for &v in &y[1..] {
        let e = v - level;
        errors.push(e);
        level += alpha * e;
    }
    Some(Fit {
        method: Method::SimpleExponentialSmoothing,
        params: Params {
            alpha,
            beta: None,
            phi: None,
            gamma: None,
        },
        level,
        trend: 0.0,
        season: vec![],
        n: y.len(),
        errors_from: 1,
        errors,
    })
}

/// Holt's damped trend, started at the first value and the first difference.
pub fn holt_damped(y: &[f64], alpha: f64, beta: f64, phi: f64) -> Option<Fit> {
    if y.len() < Method::HoltDampedTrend.min_history() {
        return None;
    }
    let (mut level, mut trend) = (y[0], y[1] - y[0]);
    let mut errors = Vec::with_capacity(y.len() - 1);
    for &v in &y[1..] {
        let f = level + phi * trend;
        errors.push(v - f);
        let next = alpha * v + (1.0 - alpha) * f;
        trend = beta * (next - level) + (1.0 - beta) * phi * trend;
        level = next;
    }
    Some(Fit {
        method: Method::HoltDampedTrend,
        params: Params {
            alpha,
            beta: Some(beta),
            phi: Some(phi),
            gamma: None,
        },
        level,
        trend,
        season: vec![],
        n: y.len(),
        errors_from: 1,
        errors,
    })
}

/// Additive Holt–Winters with a 52-week season: the level starts at the first year's
/// mean, the trend at the difference of the first two years' means per week, the
/// seasonal indices at the first year's deviations from its mean; errors from week 52 on.
pub fn holt_winters(y: &[f64], alpha: f64, beta: f64, gamma: f64) -> Option<Fit> {
    if y.len() < Method::HoltWintersAdditive.min_history() {
        return None;
    }
    let m = SEASON;
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let mut level = mean(&y[..m]);
    let mut trend = (mean(&y[m..2 * m]) - level) / m as f64;
    let mut season: Vec<f64> = y[..m].iter().map(|v| v - level).collect();
    let mut errors = Vec::with_capacity(y.len() - m);
    for (t, &v) in y.iter().enumerate().skip(m) {
        let s = season[t % m];
        let f = level + trend + s;
        errors.push(v - f);
        let next = alpha * (v - s) + (1.0 - alpha) * (level + trend);
        trend = beta * (next - level) + (1.0 - beta) * trend;
        season[t % m] = gamma * (v - next) + (1.0 - gamma) * s;
        level = next;
    }
    Some(Fit {
        method: Method::HoltWintersAdditive,
        params: Params {
            alpha,
            beta: Some(beta),
            phi: None,
            gamma: Some(gamma),
        },
        level,
        trend,
        season,
        n: y.len(),
        errors_from: m,
        errors,
    })
}

/// `k/steps` for `k = 1..steps`.
fn grid(steps: u32) -> impl Iterator<Item = f64> + Clone {
    (1..steps).map(move |k| f64::from(k) / f64::from(steps))
}

/// Damping factors tried (1: no damping).
const PHIS: [f64; 6] = [0.8, 0.85, 0.9, 0.95, 0.98, 1.0];

/// The method fitted on `y`, its parameters chosen on a grid (α by 0.01 for SES; α, β by
/// 0.05 and φ in {0.8, 0.85, 0.9, 0.95, 0.98, 1} for Holt; α, β, γ by 0.1 for
/// Holt–Winters) to minimise the one-step squared errors; the first of equals wins.
/// `None` when the series is too short for the method.
pub fn fit(method: Method, y: &[f64]) -> Option<Fit> {
    if y.len() < method.min_history() {
        return None;
    }
    let better = |best: Option<Fit>, candidate: Option<Fit>| match (best, candidate) {
        (Some(b), Some(c)) if c.sse() < b.sse() => Some(c),
        (Some(b), _) => Some(b),
        (None, c) => c,
    };
    let mut best = None;
    match method {
        Method::SimpleExponentialSmoothing => {
            for a in grid(100) {
                best = better(best, ses(y, a));
            }
        }
        Method::HoltDampedTrend => {
            for a in grid(20) {
                for b in grid(20) {
                    for phi in PHIS {
                        best = better(best, holt_damped(y, a, b, phi));
                    }
                }
            }
        }
        Method::HoltWintersAdditive => {
            for a in grid(10) {
                for b in grid(10) {
                    for g in grid(10) {
                        best = better(best, holt_winters(y, a, b, g));
                    }
                }
            }
        }
    }
    best
}

/// Corrected Akaike information criterion of a fit's one-step errors from `from` on
/// (Gaussian errors); `None` when there are too few errors for its parameters.
fn aicc(fit: &Fit, from: usize) -> Option<f64> {
    let n = (fit.n - from.max(fit.errors_from)) as f64;
    let k = fit.method.parameters() as f64;
    if n - k - 1.0 <= 0.0 {
        return None;
    }
    // A perfect fit has no variance; a floor keeps the logarithm finite (ties then go to
    // the simpler model).
    let mse = (fit.sse_from(from) / n).max(1e-12);
    Some(n * mse.ln() + 2.0 * k + 2.0 * k * (k + 1.0) / (n - k - 1.0))
}

/// Why a method was chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// Fewer than two years of history (the weeks fitted) for a yearly season.
    TooShortForSeason { weeks: usize },
    /// Two years or more, but the seasonal model's one-step errors were not smaller.
    SeasonDidNotHelp { seasonal_rmse: f64, rmse: f64 },
    /// Two years or more, and the seasonal model's one-step errors were smaller.
    SeasonHelped { seasonal_rmse: f64, rmse: f64 },
}

/// The model for `y`, fitted, and why.
///
/// SES and Holt's damped trend compete by AICc on their one-step errors (the trend's
/// three extra parameters must pay for themselves; equals go to SES). Holt–Winters
/// competes when the series less its backtest tail (`holdout` weeks) still spans two
/// years — so that the backtest refits the same method — and wins when its root mean
/// squared one-step error from week 52 on is below the winner's over the same weeks.
/// `None` for a series shorter than [`MIN_HISTORY`].
pub fn choose(y: &[f64], holdout: usize) -> Option<(Fit, Why)> {
    if y.len() < MIN_HISTORY {
        return None;
    }
    let ses_fit = fit(Method::SimpleExponentialSmoothing, y)?;
    let holt_fit = fit(Method::HoltDampedTrend, y)?;
    // Both scored on the same weeks (from t = 1).
    let plain = match (aicc(&ses_fit, 1), aicc(&holt_fit, 1)) {
        (Some(s), Some(h)) if h < s => holt_fit,
        (None, Some(_)) => holt_fit,
        _ => ses_fit,
    };
    let seasonal_ok = y.len().saturating_sub(holdout) >= Method::HoltWintersAdditive.min_history();
    if !seasonal_ok {
        return Some((plain, Why::TooShortForSeason { weeks: y.len() }));
    }
    let hw = fit(Method::HoltWintersAdditive, y)?;
    let rmse = |f: &Fit| (f.sse_from(SEASON) / (y.len() - SEASON) as f64).sqrt();
    let (seasonal_rmse, plain_rmse) = (rmse(&hw), rmse(&plain));
    if seasonal_rmse < plain_rmse {
        Some((
            hw,
            Why::SeasonHelped {
                seasonal_rmse,
                rmse: plain_rmse,
            },
        ))
    } else {
        Some((
            plain,
            Why::SeasonDidNotHelp {
                seasonal_rmse,
                rmse: plain_rmse,
            },
        ))
    }
}

/// Weeks held out by the backtest: `min(weeks, 25 % of the history)`, at least one.
pub fn holdout_weeks(history: usize, weeks: usize) -> usize {
    weeks.min(history / 4).max(1)
}

/// A backtest's score.
#[derive(Debug, Clone, PartialEq)]
pub struct Backtest {
    /// Weeks the method was refitted on.
    pub training_weeks: usize,
    /// Weeks held out and forecast.
    pub holdout_weeks: usize,
    /// Held-out weeks that sold nothing: left out of the MAPE.
    pub zero_weeks_excluded: usize,
    /// Mean absolute percentage error over the other held-out weeks, in percent; `None`
    /// when every held-out week sold nothing.
    pub mape: Option<f64>,
}

/// Forecasts are never negative (sales net of refunds could be, a forecast of them is
/// not made so).
pub fn clamp(forecasts: Vec<f64>) -> Vec<f64> {
    forecasts.into_iter().map(|f| f.max(0.0)).collect()
}

/// Mean absolute percentage error of `forecast` against `actual`, in percent, over the
/// weeks whose actual is not zero; with the number of weeks left out.
pub fn mape(actual: &[f64], forecast: &[f64]) -> (Option<f64>, usize) {
    let scored: Vec<f64> = actual
        .iter()
        .zip(forecast)
        .filter(|(a, _)| **a != 0.0)
        .map(|(a, f)| ((a - f) / a).abs())
        .collect();
    let excluded = actual.len().min(forecast.len()) - scored.len();
    if scored.is_empty() {
        (None, excluded)
    } else {
        (
            Some(100.0 * scored.iter().sum::<f64>() / scored.len() as f64),
            excluded,
        )
    }
}

/// Refits `method` on `y` less its last `holdout` weeks, forecasts them (clamped at zero)
/// and scores the forecasts. `None` when what is left is too short for the method.
pub fn backtest(method: Method, y: &[f64], holdout: usize) -> Option<Backtest> {
    if holdout == 0 || holdout >= y.len() {
        return None;
    }
    let training = &y[..y.len() - holdout];
    let refit = fit(method, training)?;
    let (mape, zero_weeks_excluded) = mape(&y[training.len()..], &clamp(refit.forecast(holdout)));
    Some(Backtest {
        training_weeks: training.len(),
        holdout_weeks: holdout,
        zero_weeks_excluded,
        mape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn a_hand_computed_ses_step() {
        // l0 = 10; y1 = 20: error 10, l1 = 0.5·20 + 0.5·10 = 15;
        // y2 = 30: error 15, l2 = 0.5·30 + 0.5·15 = 22.5.
        let f = ses(&[10.0, 20.0, 30.0], 0.5).unwrap();
        assert_eq!(f.errors, vec![10.0, 15.0]);
        assert_eq!(f.sse(), 325.0);
        assert_eq!(f.forecast(3), vec![22.5, 22.5, 22.5]);
    }

    #[test]
    fn a_hand_computed_damped_holt_step() {
        // l0 = 10, b0 = 10; α = 0.5, β = 0.5, φ = 0.9.
        // t=1: ŷ = 10 + 9 = 19, e = 1, l1 = 0.5·20 + 0.5·19 = 19.5,
        //      b1 = 0.5·(19.5 − 10) + 0.5·0.9·10 = 9.25.
        // t=2: ŷ = 19.5 + 0.9·9.25 = 27.825, e = 2.175, l2 = 0.5·30 + 0.5·27.825 = 28.9125,
        //      b2 = 0.5·(28.9125 − 19.5) + 0.5·0.9·9.25 = 8.86875.
        // Forecasts: 28.9125 + 0.9·8.86875 = 36.894375, then + 0.81·8.86875 = 44.0780625.
        let f = holt_damped(&[10.0, 20.0, 30.0], 0.5, 0.5, 0.9).unwrap();
        assert!(close(f.errors[0], 1.0, 1e-12));
        assert!(close(f.errors[1], 2.175, 1e-12));
        let h = f.forecast(2);
        assert!(close(h[0], 36.894375, 1e-9), "{h:?}");
        assert!(close(h[1], 44.0780625, 1e-9), "{h:?}");
    }

    #[test]
    fn the_grid_picks_the_alpha_with_the_least_squared_error() {
        // A level shift: the best SES follows it as fast as it can.
        let y = [10.0, 10.0, 10.0, 20.0, 20.0, 20.0, 20.0, 20.0];
        let f = fit(Method::SimpleExponentialSmoothing, &y).unwrap();
        assert_eq!(f.params.alpha, 0.99);
        for a in [0.2, 0.5, 0.9] {
            assert!(ses(&y, a).unwrap().sse() > f.sse());
        }
    }

    #[test]
    fn a_constant_series_forecasts_the_constant_with_mape_zero() {
        let y = vec![250.0; 30];
        let (f, why) = choose(&y, holdout_weeks(30, 12)).unwrap();
        assert_eq!(f.method, Method::SimpleExponentialSmoothing);
        assert_eq!(why, Why::TooShortForSeason { weeks: 30 });
        assert_eq!(f.forecast(12), vec![250.0; 12]);
        let b = backtest(f.method, &y, holdout_weeks(30, 12)).unwrap();
        assert_eq!(
            b,
            Backtest {
                training_weeks: 23,
                holdout_weeks: 7,
                zero_weeks_excluded: 0,
                mape: Some(0.0)
            }
        );
    }

    #[test]
    fn a_linear_trend_is_followed() {
        let y: Vec<f64> = (0..20).map(|t| 100.0 + 5.0 * f64::from(t)).collect();
        let (f, _) = choose(&y, holdout_weeks(20, 4)).unwrap();
        assert_eq!(f.method, Method::HoltDampedTrend);
        assert_eq!(f.params.phi, Some(1.0));
        let h = f.forecast(4);
        for (k, v) in h.iter().enumerate() {
            assert!(close(*v, 200.0 + 5.0 * k as f64, 1e-9), "{h:?}");
        }
        let b = backtest(f.method, &y, 4).unwrap();
        assert!(b.mape.unwrap() < 1e-9, "{b:?}");
    }

    #[test]
    fn a_noisy_level_is_not_given_a_trend() {
        // Alternating around 100: no trend to pay three parameters for.
        let y: Vec<f64> = (0..40)
            .map(|t| if t % 2 == 0 { 95.0 } else { 105.0 })
            .collect();
        let (f, _) = choose(&y, 10).unwrap();
        assert_eq!(f.method, Method::SimpleExponentialSmoothing);
        assert!(close(f.forecast(1)[0], 100.0, 5.0), "{:?}", f.forecast(1));
    }

    #[test]
    fn a_yearly_season_is_found_with_three_years_of_history() {
        // A sine with a 52-week period on a level of 1000.
        let y: Vec<f64> = (0..156)
            .map(|t| 1000.0 + 300.0 * (2.0 * std::f64::consts::PI * t as f64 / 52.0).sin())
            .collect();
        let holdout = holdout_weeks(y.len(), 12);
        let (f, why) = choose(&y, holdout).unwrap();
        assert_eq!(f.method, Method::HoltWintersAdditive, "{why:?}");
        assert!(matches!(why, Why::SeasonHelped { .. }));
        let next = f.forecast(13);
        for (k, v) in next.iter().enumerate() {
            let t = (156 + k) as f64;
            let truth = 1000.0 + 300.0 * (2.0 * std::f64::consts::PI * t / 52.0).sin();
            assert!(close(*v, truth, 1.0), "week {k}: {v} vs {truth}");
        }
        let b = backtest(f.method, &y, holdout).unwrap();
        assert!(b.mape.unwrap() < 0.1, "{b:?}");
    }

    #[test]
    fn two_years_less_the_tail_are_too_few_for_a_season() {
        let y = vec![5.0; 110];
        let (f, why) = choose(&y, 12).unwrap();
        assert_eq!(f.method, Method::SimpleExponentialSmoothing);
        assert_eq!(why, Why::TooShortForSeason { weeks: 110 });
    }

    #[test]
    fn weeks_without_sales_are_left_out_of_the_mape() {
        let (m, excluded) = mape(&[100.0, 0.0, 200.0], &[110.0, 50.0, 150.0]);
        // (10 % + 25 %) / 2
        assert!(close(m.unwrap(), 17.5, 1e-12));
        assert_eq!(excluded, 1);
        assert_eq!(mape(&[0.0, 0.0], &[1.0, 2.0]), (None, 2));
    }

    #[test]
    fn too_short_a_history_is_not_forecast() {
        assert!(choose(&[1.0; 7], 1).is_none());
        assert!(choose(&[1.0; 8], 2).is_some());
    }

    #[test]
    fn the_holdout_is_the_smaller_of_the_horizon_and_a_quarter() {
        assert_eq!(holdout_weeks(100, 12), 12);
        assert_eq!(holdout_weeks(20, 12), 5);
        assert_eq!(holdout_weeks(8, 52), 2);
        assert_eq!(holdout_weeks(3, 1), 1);
    }
}
