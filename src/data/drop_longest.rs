//! `--drop-longest F` (seed 004): leave the longest fraction F of a task's training inputs out
//! of the run, measured in tokens as the model reads them (a pair as [CLS] a [SEP] b [SEP]),
//! before --max-len truncates them.

use super::Tokenizer;
use super::cs224n::Example;
use crate::error::Result;

/// A truncation length no input reaches: the inputs are measured whole.
const NO_LIMIT: usize = 1 << 20;

/// What one task's filter did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub dropped: usize,
    pub of: usize,
    /// The longest input kept, in tokens.
    pub longest_kept: usize,
}

/// The indices of the `round(fraction · n)` longest of `lengths`, ties broken toward the later
/// example (so the choice depends on the data only), in ascending order.
pub fn longest(lengths: &[usize], fraction: f64) -> Vec<usize> {
    let k = ((fraction * lengths.len() as f64).round() as usize).min(lengths.len());
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(b.cmp(&a)));
    let mut out = order[..k].to_vec();
    out.sort_unstable();
    out
}

/// Removes the longest `fraction` of `examples` (tokens under `tok`).
pub fn drop_longest(tok: &mut Tokenizer, examples: &mut Vec<Example>, fraction: f64) -> Result<Dropped> {
    let mut lengths = Vec::with_capacity(examples.len());
    for e in examples.iter() {
        lengths.push(tok.encode(&[e.input()], NO_LIMIT)?.len);
    }
    let gone = longest(&lengths, fraction);
    let mut drop = vec![false; examples.len()];
    gone.iter().for_each(|&i| drop[i] = true);
    let longest_kept = lengths.iter().zip(&drop).filter(|(_, d)| !**d).map(|(l, _)| *l).max().unwrap_or(0);
    let of = examples.len();
    let mut i = 0;
    examples.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
    Ok(Dropped { dropped: gone.len(), of, longest_kept })
}

#[cfg(test)]
mod tests {
    use super::longest;

    #[test]
    fn picks_the_longest_and_breaks_ties_toward_later_examples() {
        let l = [5, 9, 3, 9, 7, 1, 9, 2, 4, 6];
        assert_eq!(longest(&l, 0.0), Vec::<usize>::new());
        assert_eq!(longest(&l, 0.1), vec![6]); // three of length 9: the last
        assert_eq!(longest(&l, 0.2), vec![3, 6]);
        assert_eq!(longest(&l, 0.4), vec![1, 3, 4, 6]);
        assert_eq!(longest(&l, 0.04), Vec::<usize>::new()); // 0.4 examples rounds to none
        assert_eq!(longest(&[], 0.5), Vec::<usize>::new());
    }
}
