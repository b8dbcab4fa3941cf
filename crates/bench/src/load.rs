//! The HTTP load: closed-loop workers that each keep one request in flight, for a fixed
//! time, recording the latency of every answer after the warm-up.

use crate::http1::{self, Connection};
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
    pub base: String,
    pub partner_tokens: Vec<String>,
    pub members: Vec<Member>,
    /// Members that earned points during the run: the ones that can redeem.
    pub earners: RwLock<Vec<usize>>,
}

pub(crate) enum Outcome {
    Ok,
    /// A correct "no" from the business rules (not enough points): not an error.
    Refused,
    Error,
}

impl Target {
    async fn execute(&self, op: Op, rng: &mut StdRng, conn: &mut Connection) -> Outcome {
        match op {
            Op::Read => {
                let member = &self.members[rng.gen_range(0..self.members.len())];
                self.read(member, rng, conn).await
            }
            Op::Earn => {
                let cents: u32 = rng.gen_range(500..15_000);
                let amount = format!("{}.{:02}", cents / 100, cents % 100);
                let index = rng.gen_range(0..self.members.len());
                let outcome = self.purchase(index, &amount, 0, rng, conn).await;
                if matches!(outcome, Outcome::Ok) {
                    self.earners.write().expect("earners").push(index);
                }
                outcome
            }
            Op::Redeem => match self.pick_earner(rng) {
                Some(index) => self.purchase(index, "10.00", 50, rng, conn).await,
                None => Outcome::Refused,
            },
        }
    }

    async fn purchase(
        &self,
        member: usize,
        amount: &str,
        redeem: i64,
        rng: &mut StdRng,
        conn: &mut Connection,
    ) -> Outcome {
        let token = &self.partner_tokens[rng.gen_range(0..self.partner_tokens.len())];
        let body = json!({
            "card_number": self.members[member].card,
            "amount": {"amount": amount, "currency": "EUR"},
            "external_ref": Uuid::new_v4().to_string(),
            "redeem_points": redeem,
        })
        .to_string();
        let key = Uuid::new_v4().to_string();
        let request = http1::post_json("/v1/purchases", token, &key, &body);
        outcome(conn.send(&request).await)
    }

    async fn read(&self, member: &Member, rng: &mut StdRng, conn: &mut Connection) -> Outcome {
        let token = &self.partner_tokens[rng.gen_range(0..self.partner_tokens.len())];
        let request = http1::get(&format!("/v1/members/{}/balance", member.id), token);
        outcome(conn.send(&request).await)
    }

    fn pick_earner(&self, rng: &mut StdRng) -> Option<usize> {
        let earners = self.earners.read().expect("earners");
        (!earners.is_empty()).then(|| earners[rng.gen_range(0..earners.len())])
    }
}

pub(crate) fn outcome(status: std::io::Result<u16>) -> Outcome {
    match status {
        Ok(200 | 201) => Outcome::Ok,
        Ok(409) => Outcome::Refused,
        _ => Outcome::Error,
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
    pub(crate) fn record(&mut self, outcome: Outcome, sent: Instant) {
        self.requests += 1;
        match outcome {
            Outcome::Ok => {}
            Outcome::Refused => self.refused += 1,
            Outcome::Error => {
                self.errors += 1;
                return;
            }
        }
        let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        self.latencies_us.push(micros);
    }

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

/// Reads every member's balance once, `concurrency` at a time: the first read of each
/// member, from the database (the directory and the cache are cold for it).
pub async fn read_each_once(target: Arc<Target>, concurrency: usize) -> Figures {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (target, next) = (target.clone(), next.clone());
            tokio::spawn(async move {
                let mut figures = Figures::default();
                let mut rng = StdRng::from_entropy();
                let mut conn = Connection::new(&target.base);
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(member) = target.members.get(index) else {
                        return figures;
                    };
                    let sent = Instant::now();
                    let outcome = target.read(member, &mut rng, &mut conn).await;
                    figures.record(outcome, sent);
                }
            })
        })
        .collect();
    let mut total = collect(workers).await;
    total.seconds = started.elapsed().as_secs_f64();
    total
}

async fn collect(workers: Vec<tokio::task::JoinHandle<Figures>>) -> Figures {
    let mut total = Figures::default();
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
                let mut conn = Connection::new(&target.base);
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        return figures;
                    }
                    let op = mix(rng.gen_range(0..100));
                    let outcome = target.execute(op, &mut rng, &mut conn).await;
                    if sent >= measure_from {
                        figures.record(outcome, sent);
                    }
                }
            })
        })
        .collect();
    let mut total = collect(workers).await;
    total.seconds = scenario.measure.as_secs_f64();
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
