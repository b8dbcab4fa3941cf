//! The HTTP load: closed-loop workers that each keep one request in flight, for a fixed
//! time, recording the latency of every answer after the warm-up.

use crate::setup::Member;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// GET /v1/members/{id}/balance of a random member.
    Read,
    /// POST /v1/purchases paid in money: points are earned.
    Earn,
    /// POST /v1/purchases paying 50 points, by a member who has earned before.
    Redeem,
}

/// What the load talks to.
pub struct Target {
    pub http: reqwest::Client,
    pub base: String,
    pub partner_tokens: Vec<String>,
    pub members: Vec<Member>,
    /// Members that earned points during the run: the ones that can redeem.
    pub earners: RwLock<Vec<usize>>,
}

enum Outcome {
    Ok,
    /// A correct "no" from the business rules (not enough points): not an error.
    Refused,
    Error,
}

impl Target {
    async fn execute(&self, op: Op, rng: &mut StdRng) -> Outcome {
        let token = &self.partner_tokens[rng.gen_range(0..self.partner_tokens.len())];
        let result = match op {
            Op::Read => {
                let member = &self.members[rng.gen_range(0..self.members.len())];
                let url = format!("{}/v1/members/{}/balance", self.base, member.id);
                self.http.get(url).bearer_auth(token).send().await
            }
            Op::Earn | Op::Redeem => {
                let (index, amount, redeem) = match op {
                    Op::Redeem => match self.pick_earner(rng) {
                        Some(index) => (index, "10.00".to_owned(), 50),
                        None => return Outcome::Refused,
                    },
                    _ => {
                        let cents: u32 = rng.gen_range(500..15_000);
                        let amount = format!("{}.{:02}", cents / 100, cents % 100);
                        (rng.gen_range(0..self.members.len()), amount, 0)
                    }
                };
                let body = json!({
                    "card_number": self.members[index].card,
                    "amount": {"amount": amount, "currency": "EUR"},
                    "external_ref": Uuid::new_v4().to_string(),
                    "redeem_points": redeem,
                });
                let sent = self
                    .http
                    .post(format!("{}/v1/purchases", self.base))
                    .bearer_auth(token)
                    .header("Idempotency-Key", Uuid::new_v4().to_string())
                    .json(&body)
                    .send()
                    .await;
                if matches!(op, Op::Earn) && sent.as_ref().is_ok_and(|r| r.status() == 201) {
                    self.earners.write().expect("earners").push(index);
                }
                sent
            }
        };
        match result {
            Ok(res) => {
                let status = res.status();
                let _ = res.bytes().await; // read to the end: the connection is reused
                match status.as_u16() {
                    200 | 201 => Outcome::Ok,
                    409 => Outcome::Refused,
                    _ => Outcome::Error,
                }
            }
            Err(_) => Outcome::Error,
        }
    }

    fn pick_earner(&self, rng: &mut StdRng) -> Option<usize> {
        let earners = self.earners.read().expect("earners");
        (!earners.is_empty()).then(|| earners[rng.gen_range(0..earners.len())])
    }
}

/// One scenario: how many requests in flight, for how long, doing what.
pub struct Scenario {
    pub name: &'static str,
    pub concurrency: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Picks the next operation from a number in 0..100.
    pub mix: fn(u32) -> Op,
}

#[derive(Debug, Default)]
pub struct Figures {
    pub requests: usize,
    pub refused: usize,
    pub errors: usize,
    pub seconds: f64,
    /// Sorted latencies of answered requests, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Figures {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// The `p`-quantile latency in milliseconds (p in 0..=1).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * self.latencies_us.len() as f64).ceil() as usize).max(1) - 1;
        f64::from(self.latencies_us[rank.min(self.latencies_us.len() - 1)]) / 1000.0
    }
}

pub async fn run(target: Arc<Target>, scenario: &Scenario) -> Figures {
    let started = Instant::now();
    let measure_from = started + scenario.warmup;
    let end = measure_from + scenario.measure;
    let workers: Vec<_> = (0..scenario.concurrency)
        .map(|w| {
            let target = target.clone();
            let mix = scenario.mix;
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w as u64 ^ rand::random::<u64>());
                let mut figures = Figures::default();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        return figures;
                    }
                    let op = mix(rng.gen_range(0..100));
                    let outcome = target.execute(op, &mut rng).await;
                    if sent < measure_from {
                        continue;
                    }
                    figures.requests += 1;
                    match outcome {
                        Outcome::Ok => {}
                        Outcome::Refused => figures.refused += 1,
                        Outcome::Error => {
                            figures.errors += 1;
                            continue;
                        }
                    }
                    let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    figures.latencies_us.push(micros);
                }
            })
        })
        .collect();
    let mut total = Figures {
        seconds: scenario.measure.as_secs_f64(),
        ..Figures::default()
    };
    for worker in workers {
        let figures = worker.await.expect("load worker");
        total.requests += figures.requests;
        total.refused += figures.refused;
        total.errors += figures.errors;
        total.latencies_us.extend(figures.latencies_us);
    }
    total.latencies_us.sort_unstable();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let figures = Figures {
            latencies_us: (1..=100).map(|ms| ms * 1000).collect(),
            ..Figures::default()
        };
        assert_eq!(figures.percentile_ms(0.5), 50.0);
        assert_eq!(figures.percentile_ms(0.99), 99.0);
        assert_eq!(figures.percentile_ms(1.0), 100.0);
    }
}
