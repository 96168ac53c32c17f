//! The stage graph: which stages a target needs, in what order, and cycles.

use std::collections::BTreeSet;

/// The stages `target` needs (itself included), each after the stages it depends on.
/// A cycle among them is returned as the list of stages around it.
pub fn build_order(
    dependencies: &[BTreeSet<usize>],
    target: usize,
) -> Result<Vec<usize>, Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; dependencies.len()];
    let mut order = Vec::new();
    // Iterative depth-first search: (stage, next dependency to visit). The stack is the path.
    let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
    if target >= dependencies.len() {
        return Ok(order);
    }
    marks[target] = Mark::Active;
    stack.push((target, dependencies[target].iter().rev().copied().collect()));
    while let Some((stage, pending)) = stack.last_mut() {
        let stage = *stage;
        match pending.pop() {
            Some(next) if next >= dependencies.len() => {}
            Some(next) => match marks[next] {
                Mark::Done => {}
                Mark::Active => {
                    let start = stack.iter().position(|(s, _)| *s == next).unwrap_or(0);
                    let mut cycle: Vec<usize> = stack[start..].iter().map(|(s, _)| *s).collect();
                    cycle.push(next);
                    return Err(cycle);
                }
                Mark::New => {
                    marks[next] = Mark::Active;
                    stack.push((next, dependencies[next].iter().rev().copied().collect()));
                }
            },
            None => {
                marks[stage] = Mark::Done;
                order.push(stage);
                stack.pop();
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(edges: &[&[usize]]) -> Vec<BTreeSet<usize>> {
        edges.iter().map(|e| e.iter().copied().collect()).collect()
    }

    #[test]
    fn dependencies_come_first_and_unneeded_stages_are_pruned() {
        // 0 ← 2 → 1, 3 is independent, target 2.
        let graph = deps(&[&[], &[], &[0, 1], &[]]);
        assert_eq!(build_order(&graph, 2), Ok(vec![0, 1, 2]));
    }

    #[test]
    fn shared_dependency_appears_once() {
        let graph = deps(&[&[], &[0], &[0], &[1, 2]]);
        assert_eq!(build_order(&graph, 3), Ok(vec![0, 1, 2, 3]));
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        let graph = deps(&[&[], &[2], &[1], &[1]]);
        assert_eq!(build_order(&graph, 3), Err(vec![1, 2, 1]));
        let self_loop = deps(&[&[0]]);
        assert_eq!(build_order(&self_loop, 0), Err(vec![0, 0]));
    }

    #[test]
    fn deep_chains_do_not_overflow() {
        let graph: Vec<BTreeSet<usize>> = (0..100_000)
            .map(|i| {
                if i == 0 {
                    BTreeSet::new()
                } else {
                    [i - 1].into()
                }
            })
            .collect();
        assert_eq!(build_order(&graph, 99_999).map(|o| o.len()), Ok(100_000));
    }
}
