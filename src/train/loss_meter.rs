//! Running sums of each task's training loss between two logging steps, kept on the loss's
//! device: on a GPU each loss is added in device memory by one tiny launch, and the sums reach
//! the host only when the trainer logs, so no step waits for the GPU to finish (one read per
//! `--log-every` steps instead of one per task per step).

use crate::device::{Buffer, Device};
use crate::error::Result;
use crate::store::{Slot, Store};
use crate::tensor::Tensor;

pub struct LossMeter {
    /// (tasks) sums on the GPU; on the CPU `host` holds them.
    device_sums: Option<Buffer<f64>>,
    host: Vec<f64>,
    counts: Vec<usize>,
}

impl LossMeter {
    pub fn new(device: &Device, tasks: usize) -> Result<LossMeter> {
        let device_sums = match device {
            Device::Cuda(_) => Some(Buffer::zeros(device, tasks)?),
            Device::Cpu => None,
        };
        Ok(LossMeter { device_sums, host: vec![0.0; tasks], counts: vec![0; tasks] })
    }

    /// Adds task `t`'s scalar `loss` (read on the CPU, queued on a GPU).
    pub fn add(&mut self, store: &Store<f32>, loss: Tensor, t: usize) -> Result<()> {
        match &self.device_sums {
            Some(sums) => {
                let (dev, [], [lp], []) = store.cuda_io([], [Slot::Val(loss)], [])?;
                let sp = sums.device_ptr().expect("the sums are allocated");
                crate::ops::loss::cuda::accumulate(&dev, lp, sp, t as u32)?;
            }
            None => self.host[t] += store.read(loss)?[0] as f64,
        }
        self.counts[t] += 1;
        Ok(())
    }

    /// The mean loss of each task since the last call (None for a task with none), then zero.
    pub fn take(&mut self) -> Result<Vec<Option<f64>>> {
        if let Some(sums) = &mut self.device_sums {
            let n = self.counts.len();
            self.host = sums.read(0..n)?;
            sums.fill_zero(0..n)?;
        }
        let means = self.host.iter().zip(&self.counts).map(|(&s, &c)| (c > 0).then(|| s / c as f64)).collect();
        self.host.iter_mut().for_each(|s| *s = 0.0);
        self.counts.iter_mut().for_each(|c| *c = 0);
        Ok(means)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_per_task_then_zero() {
        let mut store = Store::<f32>::new(Device::Cpu);
        let mut meter = LossMeter::new(&Device::Cpu, 3).unwrap();
        for (v, t) in [(1.5, 0), (2.5, 0), (4.0, 2)] {
            let loss = store.constant(&[v], &[1]).unwrap();
            meter.add(&store, loss, t).unwrap();
        }
        assert_eq!(meter.take().unwrap(), vec![Some(2.0), None, Some(4.0)]);
        assert_eq!(meter.take().unwrap(), vec![None, None, None]);
        let nan = store.constant(&[f32::NAN], &[1]).unwrap();
        meter.add(&store, nan, 1).unwrap();
        assert!(meter.take().unwrap()[1].is_some_and(f64::is_nan));
    }
}
