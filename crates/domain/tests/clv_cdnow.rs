//! The CLV models against `lifetimes` 0.11.3 and the published figures, on CDNOW.
//!
//! Reference figures were produced with lifetimes 0.11.3 (numpy 2.4, pandas 3.1,
//! scipy 1.17, Python 3.11) from `CDNOW_master.txt`:
//!
//!     s = summary_data_from_transaction_data(df, "customer_id", "date",
//!             monetary_value_col="dollar_value", observation_period_end="1997-09-30",
//!             freq="D", freq_multiplier=7)
//!     BetaGeoFitter().fit(s.frequency, s.recency, s.T)
//!     rep = s[(s.frequency > 0) & (s.monetary_value > 0)]
//!     GammaGammaFitter().fit(rep.frequency, rep.monetary_value)
//!
//! with the log-likelihoods summed over customers in weeks (lifetimes reports a mean
//! on rescaled time). The fixtures are the same data, grouped: written by
//! `cargo run --release -p coalition-domain --example clv_fit -- CDNOW_master.txt
//! --write-fixtures crates/domain/tests/fixtures`.

use coalition_domain::clv::{
    customer_lifetime_value, BgNbd, CustomerSummary, GammaGamma, RfGroup, SpendObservation,
};

const CDNOW_RF_GROUPS: &str = include_str!("fixtures/cdnow_rf_groups.txt");
const CDNOW_SPEND: &str = include_str!("fixtures/cdnow_spend.txt");
const FHL_SAMPLE_RF_GROUPS: &str = include_str!("fixtures/fhl_cdnow_sample_rf_groups.txt");

/// lifetimes' BetaGeoFitter on the full CDNOW data, calibration to 1997-09-30.
const LIFETIMES_BG: BgNbd = BgNbd {
    r: 0.251_624_011_424_104,
    alpha: 4.788_945_170_327_028,
    a: 0.723_433_035_728_816_2,
    b: 2.161_086_981_372_379,
};
const LIFETIMES_BG_LL: f64 = -95_368.443_933_160_9;
/// lifetimes' GammaGammaFitter on the same data's 9,450 repeaters with positive spend.
const LIFETIMES_GG: GammaGamma = GammaGamma {
    p: 6.275_358_592_836_066,
    q: 3.624_450_210_391_096,
    gamma: 14.983_688_961_951_682,
};
const LIFETIMES_GG_LL: f64 = -40_763.476_261_390_8;

/// Lines of whitespace-separated numbers, `#` lines skipped.
fn rows(text: &str) -> impl Iterator<Item = Vec<f64>> + '_ {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
}

/// `x t_x T count` rows, times divided by `per_week` (7 for days, 1 for weeks).
fn rf_groups(text: &str, per_week: f64) -> Vec<RfGroup> {
    rows(text)
        .map(|r| RfGroup {
            frequency: r[0] as u32,
            recency: r[1] / per_week,
            age: r[2] / per_week,
            count: r[3] as u64,
        })
        .collect()
}

fn spend() -> Vec<SpendObservation> {
    rows(CDNOW_SPEND)
        .map(|r| SpendObservation {
            frequency: r[0] as u32,
            mean_value: r[1] / 100.0 / r[0],
        })
        .collect()
}

fn assert_close(what: &str, ours: f64, theirs: f64, relative: f64) {
    let off = ((ours - theirs) / theirs).abs();
    assert!(
        off <= relative,
        "{what}: ours {ours}, lifetimes {theirs}, off by {off:e}"
    );
}

#[test]
fn bgnbd_fit_matches_lifetimes_on_cdnow() {
    let groups = rf_groups(CDNOW_RF_GROUPS, 7.0);
    assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), 23_570);
    // Same likelihood function: lifetimes' optimum scores the same here.
    assert_close(
        "LL at lifetimes' optimum",
        LIFETIMES_BG.log_likelihood(&groups),
        LIFETIMES_BG_LL,
        1e-12,
    );

    let fit = BgNbd::fit(&groups).unwrap();
    let (ours, theirs) = (fit.params, LIFETIMES_BG);
    assert_close("r", ours.r, theirs.r, 5e-3);
    assert_close("alpha", ours.alpha, theirs.alpha, 5e-3);
    assert_close("a", ours.a, theirs.a, 5e-3);
    assert_close("b", ours.b, theirs.b, 5e-3);
    assert_close("log-likelihood", fit.log_likelihood, LIFETIMES_BG_LL, 1e-4);
}

#[test]
fn gamma_gamma_fit_matches_lifetimes_on_cdnow() {
    let obs = spend();
    assert_eq!(obs.len(), 9_450);
    assert_close(
        "LL at lifetimes' optimum",
        LIFETIMES_GG.log_likelihood(&obs),
        LIFETIMES_GG_LL,
        1e-12,
    );

    let fit = GammaGamma::fit(&obs).unwrap();
    let (ours, theirs) = (fit.params, LIFETIMES_GG);
    assert_close("p", ours.p, theirs.p, 5e-3);
    assert_close("q", ours.q, theirs.q, 5e-3);
    assert_close("gamma", ours.gamma, theirs.gamma, 5e-3);
    assert_close("log-likelihood", fit.log_likelihood, LIFETIMES_GG_LL, 1e-4);
}

#[test]
fn predictions_match_lifetimes_for_a_cdnow_customer() {
    // Customer 00003: 2 repeat days, last 90 days after the first, 271 days before the
    // end, repeat days averaging $20.15. lifetimes' figures with the fits above.
    let c = CustomerSummary {
        frequency: 2,
        recency_days: 90,
        age_days: 271,
        monetary_value: 20.15,
    };
    let bg = LIFETIMES_BG;
    assert_close(
        "P(alive)",
        bg.probability_alive(2, c.recency(), c.age()),
        0.364_236_19,
        1e-7,
    );
    assert_close(
        "E[X(39) | …]",
        bg.conditional_expected_purchases(39.0, 2, c.recency(), c.age()),
        0.617_391_79,
        1e-7,
    );
    assert_close(
        "E[X(39)]",
        bg.expected_purchases(39.0),
        1.174_256_228_803_708_2,
        1e-10,
    );
    let spend = LIFETIMES_GG.conditional_expected_average_value(2, 20.15);
    assert_close("E[M | …]", spend, 22.861_360_51, 1e-8);
    // customer_lifetime_value(bgf, …, time=12, discount_rate=0.01, freq="W")
    let clv = customer_lifetime_value(&bg, &LIFETIMES_GG, &c, 12, 0.01);
    assert_close("CLV", clv, 16.967_261_99, 1e-8);
}

#[test]
fn fit_on_the_papers_sample_reproduces_the_published_estimates() {
    // FHL (2005) fitted their 2,357-customer sample to r = 0.243, α = 4.414,
    // a = 0.793, b = 2.426, LL = −9582.4 (lifetimes 0.11.3 gets the same).
    let groups = rf_groups(FHL_SAMPLE_RF_GROUPS, 1.0);
    assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), 2_357);
    let fit = BgNbd::fit(&groups).unwrap();
    let p = fit.params;
    let rounded = |v: f64| (v * 1e3).round() / 1e3;
    assert_eq!(
        (rounded(p.r), rounded(p.alpha), rounded(p.a), rounded(p.b)),
        (0.243, 4.414, 0.793, 2.426)
    );
    assert!(
        (fit.log_likelihood - -9582.4).abs() < 0.05,
        "{}",
        fit.log_likelihood
    );
    // With the unrounded estimates, the paper's conditional expectation to 4 decimals.
    let e = p.conditional_expected_purchases(39.0, 2, 30.43, 38.86);
    assert!((e - 1.2259).abs() < 5e-5, "{e}");
}
