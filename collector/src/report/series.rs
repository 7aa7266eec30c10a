//! Usage over time, for the console's chart: up and down bytes per step
//! (an hour, a day, any width) from the same rows a report reads, placed by
//! bucket start like a report places them, so that the steps of a range
//! add up to the report of that range. Steps are aligned to the Unix epoch
//! (days at 00:00 UTC).

use flowtally_common::agg::Direction;

use super::Usage;

/// At most this many steps in one series.
pub const MAX_STEPS: u64 = 10_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub start_ms: u64,
    pub up: u64,
    pub down: u64,
}

/// One [`Step`] per `step_ms` from the step holding `from_ms` to the one
/// holding `to_ms - 1`, empty ones included; transit is no one's usage.
/// None when that would be more than [`MAX_STEPS`] steps or `step_ms` is 0.
pub fn series(usage: &[Usage], from_ms: u64, to_ms: u64, step_ms: u64) -> Option<Vec<Step>> {
    if step_ms == 0 || from_ms >= to_ms {
        return (step_ms > 0).then(Vec::new);
    }
    let first = from_ms - from_ms % step_ms;
    let count = (to_ms - first).div_ceil(step_ms);
    if count > MAX_STEPS {
        return None;
    }
    let mut steps: Vec<Step> = (0..count)
        .map(|i| Step {
            start_ms: first + i * step_ms,
            ..Step::default()
        })
        .collect();
    for row in usage {
        if !(from_ms..to_ms).contains(&row.bucket_start_ms) {
            continue;
        }
        let step = &mut steps[((row.bucket_start_ms - first) / step_ms) as usize];
        match row.direction {
            Direction::Up => step.up += row.bytes,
            Direction::Down => step.down += row.bytes,
            Direction::Transit => {}
        }
    }
    Some(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn row(at_ms: u64, direction: Direction, bytes: u64) -> Usage {
        Usage {
            bucket_start_ms: at_ms,
            bucket_width_ms: 60_000,
            user_name: Some("alice".into()),
            session_id: Some("a-1".into()),
            subscriber_ip: "100.64.0.1".parse().unwrap(),
            direction,
            class: None,
            bytes,
            packets: 1,
            flows: 1,
        }
    }

    #[test]
    fn rows_fall_into_the_step_their_bucket_starts_in() {
        let usage = [
            row(HOUR + 5, Direction::Up, 10),
            row(2 * HOUR - 60_000, Direction::Down, 20),
            row(2 * HOUR, Direction::Down, 5),
            row(2 * HOUR, Direction::Transit, 1000),
            row(4 * HOUR, Direction::Down, 99),
        ];
        let steps = series(&usage, HOUR + 1, 4 * HOUR, HOUR).unwrap();
        assert_eq!(
            steps,
            [
                Step {
                    start_ms: HOUR,
                    up: 10,
                    down: 20
                },
                Step {
                    start_ms: 2 * HOUR,
                    up: 0,
                    down: 5
                },
                Step {
                    start_ms: 3 * HOUR,
                    up: 0,
                    down: 0
                },
            ]
        );
    }

    #[test]
    fn too_many_steps_or_a_zero_step_is_refused() {
        assert_eq!(series(&[], 0, MAX_STEPS * HOUR + 1, HOUR), None);
        assert_eq!(series(&[], 0, HOUR, 0), None);
        assert_eq!(series(&[], HOUR, HOUR, 60_000), Some(Vec::new()));
    }
}
