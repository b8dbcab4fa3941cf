//! Minimisers for the likelihood fits: BFGS where the gradient is known (BG/NBD: about
//! 30 evaluations of value and gradient on CDNOW), and a derivative-free Nelder–Mead
//! with restarts (Gamma-Gamma, and the fallback should BFGS not converge).

/// BFGS with a backtracking (Armijo) line search, for a smooth `f` whose gradient is
/// known: `fg(x)` gives the value and the gradient. Stops when the gradient's largest
/// component is below `gradient_tolerance`; `Err` with the best point reached when it
/// does not get there (a non-finite value at the start, a line search that finds no
/// decrease, or too many iterations — a likelihood whose maximum lies at infinity walks
/// a ridge forever), so the caller can go on from there with [`minimize`].
pub fn bfgs(
    fg: impl Fn(&[f64]) -> (f64, Vec<f64>),
    start: &[f64],
    gradient_tolerance: f64,
) -> Result<Minimum, Minimum> {
    const MAX_ITERATIONS: usize = 500;
    let n = start.len();
    let mut x = start.to_vec();
    let (mut value, mut gradient) = fg(&x);
    let mut evaluations = 1;
    if !value.is_finite() || gradient.iter().any(|g| !g.is_finite()) {
        return Err(Minimum {
            point: x,
            value: f64::INFINITY,
            evaluations,
        });
    }
    // The inverse Hessian estimate, identity at first.
    let mut h: Vec<f64> = (0..n * n)
        .map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 })
        .collect();
    for _ in 0..MAX_ITERATIONS {
        if gradient.iter().all(|g| g.abs() < gradient_tolerance) {
            return Ok(Minimum {
                point: x,
                value,
                evaluations,
            });
        }
        let mut direction: Vec<f64> = (0..n)
            .map(|i| -(0..n).map(|j| h[i * n + j] * gradient[j]).sum::<f64>())
            .collect();
        let mut slope: f64 = direction.iter().zip(&gradient).map(|(d, g)| d * g).sum();
        if slope >= 0.0 {
            // Not a descent direction: forget the curvature learnt so far.
            for (i, v) in h.iter_mut().enumerate() {
                *v = if i % (n + 1) == 0 { 1.0 } else { 0.0 };
            }
            direction = gradient.iter().map(|g| -g).collect();
            slope = -gradient.iter().map(|g| g * g).sum::<f64>();
        }
        let mut step = 1.0;
        let (next, next_value, next_gradient) = loop {
            let candidate: Vec<f64> = x
                .iter()
                .zip(&direction)
                .map(|(x, d)| x + step * d)
                .collect();
            let (v, g) = fg(&candidate);
            evaluations += 1;
            if v.is_finite() && g.iter().all(|g| g.is_finite()) && v <= value + 1e-4 * step * slope
            {
                break (candidate, v, g);
            }
            step *= 0.5;
            if step < 1e-12 {
                // No decrease left that floating point can see: a minimum if the
                // gradient is nearly flat there.
                let flat = gradient.iter().all(|g| g.abs() < 1e3 * gradient_tolerance);
                let reached = Minimum {
                    point: x,
                    value,
                    evaluations,
                };
                return if flat { Ok(reached) } else { Err(reached) };
            }
        };
        let s: Vec<f64> = next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = next_gradient
            .iter()
            .zip(&gradient)
            .map(|(a, b)| a - b)
            .collect();
        let sy: f64 = s.iter().zip(&y).map(|(s, y)| s * y).sum();
        if sy > 1e-300 {
            // H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ
            let rho = 1.0 / sy;
            let hy: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| h[i * n + j] * y[j]).sum())
                .collect();
            let yhy: f64 = y.iter().zip(&hy).map(|(y, hy)| y * hy).sum();
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += -rho * (hy[i] * s[j] + s[i] * hy[j])
                        + (rho * rho * yhy + rho) * s[i] * s[j];
                }
            }
        }
        x = next;
        value = next_value;
        gradient = next_gradient;
    }
    Err(Minimum {
        point: x,
        value,
        evaluations,
    })
}

/// Where a minimisation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    pub point: Vec<f64>,
    pub value: f64,
    pub evaluations: usize,
}

/// A run stops when the simplex's values agree to this (relative) and its vertices to
/// `POINT_TOLERANCE` (absolute, in log-parameters: 1e-8 relative on the parameters, far
/// below what the data can tell apart).
const VALUE_TOLERANCE: f64 = 1e-14;
const POINT_TOLERANCE: f64 = 1e-8;
/// A restart's fresh simplex: wide enough to leave a collapsed simplex's line, small
/// enough that confirming a minimum costs few evaluations.
const RESTART_STEP: f64 = 1e-3;
/// Per run; a run that hits it is simply restarted from its best point.
const MAX_EVALUATIONS_PER_RUN: usize = 20_000;
/// Restarts stop when one improves the value by less than this (relative).
const RESTART_TOLERANCE: f64 = 1e-13;
const MAX_RESTARTS: usize = 50;
/// All starts and restarts together: a likelihood whose maximum lies at infinity (spend
/// with no heterogeneity between customers drives Gamma-Gamma's q and γ up together)
/// would otherwise be followed for tens of thousands of evaluations.
const MAX_EVALUATIONS: usize = 6_000;

/// Minimises `f` from each of `starts`, keeping the best result.
///
/// Each start runs Nelder–Mead with a wide first simplex (`step` in every coordinate),
/// then restarts from the best vertex with a fresh, small simplex until a restart no
/// longer helps: a simplex can collapse onto a line short of the minimum, and a fresh
/// one does not stall on the same spot. Non-finite values count as +∞, so the search
/// simply backs away from parameters where the likelihood overflows.
pub fn minimize(f: impl Fn(&[f64]) -> f64, starts: &[Vec<f64>], step: f64) -> Minimum {
    let mut evaluations = 0;
    // Each start gets its share of the budget.
    let per_start = MAX_EVALUATIONS / starts.len().max(1);
    let mut best: Option<(Vec<f64>, f64)> = None;
    for start in starts {
        let budget = evaluations + per_start;
        let (point, value) = minimize_from(&f, start, step, &mut evaluations, budget);
        if best.as_ref().is_none_or(|(_, v)| value < *v) {
            best = Some((point, value));
        }
    }
    let (point, value) = best.expect("at least one start");
    Minimum {
        point,
        value,
        evaluations,
    }
}

fn minimize_from(
    f: &impl Fn(&[f64]) -> f64,
    start: &[f64],
    step: f64,
    evaluations: &mut usize,
    budget: usize,
) -> (Vec<f64>, f64) {
    let (mut point, mut value) = nelder_mead(f, start, step, evaluations, budget);
    for _ in 0..MAX_RESTARTS {
        if *evaluations >= budget {
            break;
        }
        let (p, v) = nelder_mead(f, &point, RESTART_STEP, evaluations, budget);
        let improvement = value - v;
        if v <= value {
            point = p;
            value = v;
        }
        // NaN-safe: an improvement that is not clearly positive ends the restarts.
        if improvement.is_nan() || improvement <= RESTART_TOLERANCE * (1.0 + value.abs()) {
            break;
        }
    }
    (point, value)
}

/// `f`, with NaN and ±∞ mapped to +∞.
fn evaluate(f: &impl Fn(&[f64]) -> f64, x: &[f64], evaluations: &mut usize) -> f64 {
    *evaluations += 1;
    let v = f(x);
    if v.is_finite() {
        v
    } else {
        f64::INFINITY
    }
}

/// One Nelder–Mead run with the standard coefficients (reflect 1, expand 2, contract ½,
/// shrink ½). Returns the best vertex and its value.
fn nelder_mead(
    f: &impl Fn(&[f64]) -> f64,
    start: &[f64],
    step: f64,
    evaluations: &mut usize,
    budget: usize,
) -> (Vec<f64>, f64) {
    let n = start.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n + 1);
    simplex.push((start.to_vec(), evaluate(f, start, evaluations)));
    for i in 0..n {
        let mut p = start.to_vec();
        p[i] += step;
        let v = evaluate(f, &p, evaluations);
        simplex.push((p, v));
    }
    let budget = budget.min(*evaluations + MAX_EVALUATIONS_PER_RUN);
    loop {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        if converged(&simplex) || *evaluations >= budget {
            break;
        }
        let centroid = centroid(&simplex[..n]);
        let worst = simplex[n].clone();
        let reflected = along(&centroid, &worst.0, -1.0);
        let fr = evaluate(f, &reflected, evaluations);
        if fr < simplex[0].1 {
            let expanded = along(&centroid, &worst.0, -2.0);
            let fe = evaluate(f, &expanded, evaluations);
            simplex[n] = if fe < fr {
                (expanded, fe)
            } else {
                (reflected, fr)
            };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (reflected, fr);
        } else {
            // Contract towards the better of the worst vertex and its reflection.
            let (towards, f_towards) = if fr < worst.1 {
                (&reflected, fr)
            } else {
                (&worst.0, worst.1)
            };
            let contracted = along(&centroid, towards, 0.5);
            let fc = evaluate(f, &contracted, evaluations);
            if fc < f_towards {
                simplex[n] = (contracted, fc);
            } else {
                shrink(f, &mut simplex, evaluations);
            }
        }
    }
    simplex.swap_remove(0)
}

/// Whether the sorted simplex's values and vertices have all come together.
fn converged(simplex: &[(Vec<f64>, f64)]) -> bool {
    let (best, f_best) = (&simplex[0].0, simplex[0].1);
    let f_worst = simplex[simplex.len() - 1].1;
    let values_close = f_worst - f_best <= VALUE_TOLERANCE * (1.0 + f_best.abs());
    let points_close = simplex[1..].iter().all(|(p, _)| {
        p.iter()
            .zip(best)
            .all(|(a, b)| (a - b).abs() <= POINT_TOLERANCE)
    });
    values_close && points_close
}

fn centroid(vertices: &[(Vec<f64>, f64)]) -> Vec<f64> {
    let mut c = vec![0.0; vertices[0].0.len()];
    for (p, _) in vertices {
        for (ci, pi) in c.iter_mut().zip(p) {
            *ci += pi / vertices.len() as f64;
        }
    }
    c
}

/// `centroid + t · (point − centroid)`.
fn along(centroid: &[f64], point: &[f64], t: f64) -> Vec<f64> {
    centroid
        .iter()
        .zip(point)
        .map(|(c, p)| c + t * (p - c))
        .collect()
}

/// Moves every vertex halfway towards the best one.
fn shrink(f: &impl Fn(&[f64]) -> f64, simplex: &mut [(Vec<f64>, f64)], evaluations: &mut usize) {
    let best = simplex[0].0.clone();
    for vertex in simplex.iter_mut().skip(1) {
        let p = along(&best, &vertex.0, 0.5);
        let v = evaluate(f, &p, evaluations);
        *vertex = (p, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rosenbrock_minimum() {
        let rosenbrock = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let m = minimize(rosenbrock, &[vec![-1.2, 1.0]], 1.0);
        assert!(
            (m.point[0] - 1.0).abs() < 1e-6 && (m.point[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
    }

    #[test]
    fn backs_away_from_non_finite_values() {
        // Undefined left of 0; the minimum is at 1.
        let f = |x: &[f64]| {
            if x[0] <= 0.0 {
                f64::NAN
            } else {
                x[0] - x[0].ln()
            }
        };
        let m = minimize(f, &[vec![0.5]], 2.0);
        assert!((m.point[0] - 1.0).abs() < 1e-6, "{m:?}");
    }
}
