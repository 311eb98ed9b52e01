//! Which AdamW group each trainable parameter steps in: `--head-lr` gives the task parameters
//! (every `head.*` name: the heads, and PALs, which are task parameters too) a learning rate of
//! their own, and `--no-decay-norm-bias` exempts biases and LayerNorm weights from weight decay,
//! as Hugging Face's Trainer does by default. Both follow the run's LR schedule.

use super::TrainOptions;
use crate::optim::Group;
use crate::store::Store;

/// Whether `name` is a task parameter (a head, a task's PALs).
pub fn is_task_param(name: &str) -> bool {
    name.starts_with("head.")
}

/// Whether `name` is a bias or a LayerNorm weight (Hugging Face's names, and the engine's
/// heads' and PALs' `.bias`).
pub fn is_norm_or_bias(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("LayerNorm.")
}

/// The groups of `store`'s trainable arena under `opts`: one run per stretch of parameters
/// with equal settings, in arena order (a single group without either flag).
pub fn groups<F: crate::float::Float>(store: &Store<F>, opts: &TrainOptions) -> Vec<Group> {
    let head_factor = opts.head_lr.map_or(1.0, |h| h / opts.lr);
    Group::runs(store.trainable().map(|(name, t)| {
        let factor = if is_task_param(name) { head_factor } else { 1.0 };
        let decay = if opts.no_decay_norm_bias && is_norm_or_bias(name) { 0.0 } else { opts.weight_decay };
        (t.offset, t.numel(), factor, decay)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;

    #[test]
    fn heads_and_norms_fall_in_their_groups() {
        let mut store = Store::<f32>::new(Device::Cpu);
        for (name, n) in [
            ("embeddings.word_embeddings.weight", 6),
            ("embeddings.LayerNorm.weight", 2),
            ("embeddings.LayerNorm.bias", 2),
            ("encoder.layer.0.attention.self.query.weight", 4),
            ("encoder.layer.0.attention.self.query.bias", 2),
            ("head.sst.weight", 4),
            ("head.sst.bias", 2),
        ] {
            store.add_param(name, &[n], &vec![0.0; n], true).unwrap();
        }
        let opts = TrainOptions::default();
        let all = groups(&store, &opts);
        assert_eq!(all, vec![Group { range: 0..22, lr_factor: 1.0, weight_decay: 0.01 }]);
        let opts = TrainOptions { head_lr: Some(1e-3), no_decay_norm_bias: true, ..opts };
        let g = groups(&store, &opts);
        let want = [
            (0..6, 1.0, 0.01),
            (6..10, 1.0, 0.0),
            (10..14, 1.0, 0.01),
            (14..16, 1.0, 0.0),
            (16..20, 10.0, 0.01),
            (20..22, 10.0, 0.0),
        ];
        assert_eq!(g.len(), want.len(), "{g:?}");
        for (g, (r, f, d)) in g.iter().zip(want) {
            assert_eq!((g.range.clone(), g.weight_decay), (r, d));
            assert!((g.lr_factor - f).abs() < 1e-12);
        }
    }
}
