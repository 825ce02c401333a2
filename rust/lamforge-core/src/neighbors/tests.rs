//! Oracle tests: the search against a brute-force enumeration of periodic images.

use super::*;
use crate::cell::Matrix3;

/// Small deterministic generator (xorshift) so the tests need no extra crate.
struct Random(u64);

impl Random {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn inverse(m: &Matrix3) -> Matrix3 {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, value) in row.iter_mut().enumerate() {
            let (a, b) = ((j + 1) % 3, (j + 2) % 3);
            let (c, d) = ((i + 1) % 3, (i + 2) % 3);
            *value = (m[a][c] * m[b][d] - m[a][d] * m[b][c]) / det;
        }
    }
    out
}

/// Every (centre, neighbour, shift) within the cutoff, by enumerating a generous box of images.
fn brute_force(frame: &Frame<'_>, cutoff: f64) -> Vec<(i64, i64, [i64; 3], f64)> {
    let cell = frame.cell.unwrap_or([[0.0; 3]; 3]);
    let periodic = if frame.cell.is_some() {
        frame.pbc
    } else {
        [false; 3]
    };
    let heights = if periodic.iter().any(|&p| p) {
        crate::cell::heights(&cell).unwrap()
    } else {
        [1.0; 3]
    };
    let fractional: Vec<[f64; 3]> = if periodic.iter().any(|&p| p) {
        let inv = inverse(&cell);
        frame
            .positions
            .iter()
            .map(|r| std::array::from_fn(|k| (0..3).map(|a| r[a] * inv[a][k]).sum()))
            .collect()
    } else {
        vec![[0.0; 3]; frame.positions.len()]
    };
    let range: [i64; 3] = std::array::from_fn(|k| {
        if !periodic[k] {
            return 0;
        }
        let spread = fractional
            .iter()
            .map(|s| s[k])
            .fold(0.0f64, |m, v| m.max(v.abs()));
        (2.0 * spread + cutoff / heights[k]).ceil() as i64 + 1
    });
    let mut pairs = Vec::new();
    for (i, ri) in frame.positions.iter().enumerate() {
        for (j, rj) in frame.positions.iter().enumerate() {
            for sx in -range[0]..=range[0] {
                for sy in -range[1]..=range[1] {
                    for sz in -range[2]..=range[2] {
                        let shift = [sx, sy, sz];
                        if i == j && shift == [0, 0, 0] {
                            continue;
                        }
                        let v: [f64; 3] = std::array::from_fn(|a| {
                            rj[a] - ri[a]
                                + (0..3).map(|k| shift[k] as f64 * cell[k][a]).sum::<f64>()
                        });
                        let d = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
                        if d < cutoff {
                            pairs.push((i as i64, j as i64, shift, d));
                        }
                    }
                }
            }
        }
    }
    pairs
}

fn listed(list: &PairList) -> Vec<(i64, i64, [i64; 3], f64)> {
    (0..list.len())
        .map(|p| {
            let s = &list.shifts[3 * p..3 * p + 3];
            (
                list.centers[p],
                list.neighbors[p],
                [s[0], s[1], s[2]],
                list.distances[p],
            )
        })
        .collect()
}

fn options(cutoff: f64) -> ListOptions {
    ListOptions {
        cutoff,
        max_neighbors: None,
        self_pair: false,
        max_pairs: DEFAULT_MAX_PAIRS,
    }
}

fn assert_matches_oracle(frame: &Frame<'_>, cutoff: f64) {
    let list = neighbor_list(frame, &options(cutoff)).unwrap();
    let mut got = listed(&list);
    let mut expected = brute_force(frame, cutoff);
    let by_pair = |a: &(i64, i64, [i64; 3], f64), b: &(i64, i64, [i64; 3], f64)| {
        (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2))
    };
    // Sorted output: centres ascend, distances ascend within a centre.
    for window in got.windows(2) {
        assert!(
            window[0].0 < window[1].0 || (window[0].0 == window[1].0 && window[0].3 <= window[1].3)
        );
    }
    got.sort_by(by_pair);
    expected.sort_by(by_pair);
    assert_eq!(got.len(), expected.len(), "pair count");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!((g.0, g.1, g.2), (e.0, e.1, e.2));
        assert!((g.3 - e.3).abs() < 1e-12);
    }
}

fn random_cell(random: &mut Random, scale: f64, skew: f64) -> Matrix3 {
    let mut cell = [[0.0; 3]; 3];
    for (k, row) in cell.iter_mut().enumerate() {
        for (a, value) in row.iter_mut().enumerate() {
            *value = if a == k {
                scale
            } else {
                skew * scale * (random.uniform() - 0.5)
            };
        }
    }
    cell
}

#[test]
fn random_periodic_systems_match_oracle() {
    let mut random = Random(0x9e3779b97f4a7c15);
    for case in 0..40 {
        let scale = 1.0 + 6.0 * random.uniform();
        let cell = random_cell(&mut random, scale, 1.5);
        let num_atoms = 1 + case % 7;
        let positions: Vec<[f64; 3]> = (0..num_atoms)
            .map(|_| std::array::from_fn(|_| (3.0 * random.uniform() - 1.0) * scale))
            .collect();
        let pbc = [case % 2 == 0 || case % 5 == 1, true, case % 3 != 0];
        let frame = Frame {
            positions: &positions,
            cell: Some(cell),
            pbc,
        };
        assert_matches_oracle(&frame, 0.5 + 4.0 * random.uniform());
    }
}

#[test]
fn clusters_without_cell_match_oracle() {
    let mut random = Random(42);
    for case in 0..10 {
        let positions: Vec<[f64; 3]> = (0..20 + case)
            .map(|_| std::array::from_fn(|_| 8.0 * random.uniform()))
            .collect();
        let frame = Frame {
            positions: &positions,
            cell: None,
            pbc: [true; 3],
        };
        assert_matches_oracle(&frame, 1.0 + random.uniform() * 3.0);
    }
}

#[test]
fn one_atom_cell_sees_its_images() {
    // Binary-exact coordinates so that the six distances tie exactly (float noise breaks ties).
    let positions = [[0.5, 0.25, 0.75]];
    let frame = Frame {
        positions: &positions,
        cell: Some([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]),
        pbc: [true; 3],
    };
    let list = neighbor_list(&frame, &options(2.1)).unwrap();
    // Six face neighbours at distance 2.
    assert_eq!(list.len(), 6);
    assert!(list.distances.iter().all(|d| (d - 2.0).abs() < 1e-12));
    // Ties are broken by shift, lexicographically.
    let shifts: Vec<&[i64]> = list.shifts.chunks(3).collect();
    assert_eq!(shifts[0], &[-1, 0, 0]);
    assert_eq!(shifts[5], &[1, 0, 0]);
    assert_matches_oracle(&frame, 9.0);
}

#[test]
fn dense_lists_equal_capped_separate_searches() {
    let mut random = Random(7);
    let cell = random_cell(&mut random, 6.0, 0.6);
    let positions: Vec<[f64; 3]> = (0..60)
        .map(|_| std::array::from_fn(|_| 6.0 * random.uniform()))
        .collect();
    let frame = Frame {
        positions: &positions,
        cell: Some(cell),
        pbc: [true, true, false],
    };
    let specs = [
        DenseSpec {
            cutoff: 4.5,
            max_neighbors: 30,
        },
        DenseSpec {
            cutoff: 3.0,
            max_neighbors: 12,
        },
    ];
    let dense = dense_neighbor_lists(&frame, &specs, DEFAULT_MAX_PAIRS).unwrap();
    for (spec, list) in specs.iter().zip(&dense) {
        let capped = neighbor_list(
            &frame,
            &ListOptions {
                max_neighbors: Some(spec.max_neighbors),
                ..options(spec.cutoff)
            },
        )
        .unwrap();
        assert_eq!(list.num_dropped, capped.num_dropped);
        assert!(capped.num_dropped > 0, "the test must exercise the cap");
        let mut pair = 0;
        for atom in 0..positions.len() {
            for slot in 0..spec.max_neighbors {
                let at = atom * spec.max_neighbors + slot;
                if list.index[at] < 0 {
                    assert!(list.distances[at].is_infinite());
                    continue;
                }
                assert_eq!(capped.centers[pair], atom as i64);
                assert_eq!(capped.neighbors[pair], list.index[at]);
                assert_eq!(
                    capped.shifts[3 * pair..3 * pair + 3],
                    list.shifts[3 * at..3 * at + 3]
                );
                assert_eq!(capped.distances[pair], list.distances[at]);
                pair += 1;
            }
        }
        assert_eq!(pair, capped.len());
    }
}

#[test]
fn batch_equals_frame_by_frame() {
    let mut random = Random(11);
    let sizes = [5usize, 0, 17, 1, 9];
    let mut positions = Vec::new();
    let mut offsets = vec![0usize];
    let mut cells = Vec::new();
    let mut pbcs = Vec::new();
    for (number, &size) in sizes.iter().enumerate() {
        let cell = random_cell(&mut random, 3.0 + number as f64, 0.4);
        positions.extend((0..size).map(|_| std::array::from_fn(|_| 4.0 * random.uniform())));
        offsets.push(positions.len());
        cells.push(cell);
        pbcs.push([number != 3, true, number % 2 == 0]);
    }
    let batch = Batch {
        positions: &positions,
        atom_offsets: &offsets,
        cells: &cells,
        pbcs: &pbcs,
    };
    let specs = [
        DenseSpec {
            cutoff: 4.0,
            max_neighbors: 20,
        },
        DenseSpec {
            cutoff: 2.5,
            max_neighbors: 6,
        },
    ];
    let batched = crate::parallel::install(2, || {
        batch_dense_neighbor_lists(&batch, &specs, DEFAULT_MAX_PAIRS)
    })
    .unwrap()
    .unwrap();
    for (number, window) in offsets.windows(2).enumerate() {
        let frame = Frame {
            positions: &positions[window[0]..window[1]],
            cell: Some(cells[number]),
            pbc: pbcs[number],
        };
        let single = dense_neighbor_lists(&frame, &specs, DEFAULT_MAX_PAIRS).unwrap();
        for (spec, (one, all)) in specs.iter().zip(single.iter().zip(&batched)) {
            let width = spec.max_neighbors;
            let rows = window[0] * width..window[1] * width;
            let global: Vec<i64> = one
                .index
                .iter()
                .map(|&j| if j < 0 { j } else { j + window[0] as i64 })
                .collect();
            assert_eq!(global, all.index[rows.clone()]);
            assert_eq!(one.distances, all.distances[rows.clone()]);
            assert_eq!(one.shifts, all.shifts[3 * rows.start..3 * rows.end]);
        }
    }
}

#[test]
fn budget_and_bad_inputs_are_reported() {
    let positions: Vec<[f64; 3]> = (0..8).map(|i| [i as f64, 0.0, 0.0]).collect();
    let frame = Frame {
        positions: &positions,
        cell: Some([[8.0, 0.0, 0.0], [0.0, 8.0, 0.0], [0.0, 0.0, 8.0]]),
        pbc: [true; 3],
    };
    let message = neighbor_list(
        &frame,
        &ListOptions {
            max_pairs: 100,
            ..options(6.0)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(message.contains("pairs"), "{message}");
    let message = neighbor_list(&frame, &options(-1.0))
        .unwrap_err()
        .to_string();
    assert!(message.contains("cutoff"), "{message}");
    let message = dense_neighbor_lists(&frame, &[], DEFAULT_MAX_PAIRS)
        .unwrap_err()
        .to_string();
    assert!(message.contains("specs"), "{message}");
}
