//! The feature queue of momentum keys (docs/method.md, "Feature queue"): image and text keys, one per row, a write
//! pointer that wraps for any batch size, kept across tasks and saved in every version.
use tch::{Device, Kind, Tensor};

#[derive(Debug)]
pub struct FeatureQueue {
    pub image: Tensor,
    pub text: Tensor,
    pub ptr: i64,
}

impl FeatureQueue {
    /// Random unit keys, as the paper initialises its queue buffers.
    pub fn new(size: i64, dim: i64, device: Device) -> FeatureQueue {
        let init = || super::model::normalize(&Tensor::randn([size, dim], (Kind::Float, device)));
        FeatureQueue {
            image: init(),
            text: init(),
            ptr: 0,
        }
    }

    pub fn size(&self) -> i64 {
        self.image.size()[0]
    }

    /// Writes the batch's momentum keys at the pointer, wrapping around the end. A batch larger
    /// than the queue keeps its last `size` keys (exactly what sequential writes would leave).
    pub fn enqueue(&mut self, img_keys: &Tensor, txt_keys: &Tensor) {
        let _guard = tch::no_grad_guard();
        let q = self.size();
        let b = img_keys.size()[0];
        let (img, txt, start) = if b > q {
            (
                img_keys.narrow(0, b - q, q),
                txt_keys.narrow(0, b - q, q),
                (self.ptr + b - q) % q,
            )
        } else {
            (img_keys.shallow_clone(), txt_keys.shallow_clone(), self.ptr)
        };
        let n = img.size()[0];
        let idx = (Tensor::arange(n, (Kind::Int64, img.device())) + start).remainder(q);
        let _ = self.image.index_copy_(0, &idx, &img.detach());
        let _ = self.text.index_copy_(0, &idx, &txt.detach());
        self.ptr = (self.ptr + b) % q;
    }

    /// Takes over a carried queue (the parent version's `image`, `text` rows and write
    /// pointer `ptr`). Of a queue of another size it keeps the newest rows in write order: all
    /// of them in a larger queue, whose remaining rows keep their random keys and are
    /// overwritten first; the newest `size` of them in a smaller one.
    pub fn carry_over(&mut self, image: &Tensor, text: &Tensor, ptr: i64) {
        let _guard = tch::no_grad_guard();
        let device = self.image.device();
        let (q, old) = (self.size(), image.size()[0]);
        if old == q {
            self.image = image.to_device(device);
            self.text = text.to_device(device);
            self.ptr = ptr;
            return;
        }
        let n = old.min(q);
        for (dst, src) in [(&mut self.image, image), (&mut self.text, text)] {
            // Oldest first: the row at the pointer is the next one the parent would overwrite.
            let ordered = src.to_device(device).roll([-ptr], [0]);
            dst.narrow(0, q - n, n)
                .copy_(&ordered.narrow(0, old - n, n));
        }
        self.ptr = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(start: i64, n: i64) -> Tensor {
        (Tensor::arange(n, (Kind::Float, Device::Cpu)) + start as f64)
            .unsqueeze(1)
            .repeat([1, 2])
    }

    fn col(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.select(1, 0).contiguous()).unwrap()
    }

    #[test]
    fn wraps_for_batches_that_do_not_divide_the_queue() {
        let mut q = FeatureQueue::new(5, 2, Device::Cpu);
        q.enqueue(&keys(0, 3), &keys(100, 3));
        q.enqueue(&keys(3, 3), &keys(103, 3));
        // writes 0,1,2 then 3,4 at rows 3,4 and 5 wraps to row 0
        assert_eq!(col(&q.image), vec![5.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(col(&q.text), vec![105.0, 101.0, 102.0, 103.0, 104.0]);
        assert_eq!(q.ptr, 1);
    }

    #[test]
    fn carried_queue_of_another_size_keeps_its_newest_rows() {
        // Parent queue of 5 after writes 0..=6: rows [5, 6, 2, 3, 4], pointer 2 (oldest: 2).
        let mut parent = FeatureQueue::new(5, 2, Device::Cpu);
        parent.enqueue(&keys(0, 7), &keys(100, 7));
        assert_eq!(col(&parent.image), vec![5.0, 6.0, 2.0, 3.0, 4.0]);
        assert_eq!(parent.ptr, 2);

        let mut small = FeatureQueue::new(3, 2, Device::Cpu);
        small.carry_over(&parent.image, &parent.text, parent.ptr);
        assert_eq!(col(&small.image), vec![4.0, 5.0, 6.0]);
        assert_eq!(col(&small.text), vec![104.0, 105.0, 106.0]);
        small.enqueue(&keys(7, 1), &keys(107, 1));
        assert_eq!(
            col(&small.image),
            vec![7.0, 5.0, 6.0],
            "the oldest goes first"
        );

        let mut large = FeatureQueue::new(7, 2, Device::Cpu);
        let random = col(&large.image);
        large.carry_over(&parent.image, &parent.text, parent.ptr);
        let got = col(&large.image);
        assert_eq!(
            got[..2],
            random[..2],
            "rows not carried keep their random keys"
        );
        assert_eq!(got[2..], [2.0, 3.0, 4.0, 5.0, 6.0]);
        large.enqueue(&keys(7, 2), &keys(107, 2));
        assert_eq!(
            col(&large.image)[..3],
            [7.0, 8.0, 2.0],
            "random rows go first"
        );

        let mut same = FeatureQueue::new(5, 2, Device::Cpu);
        same.carry_over(&parent.image, &parent.text, parent.ptr);
        assert_eq!(col(&same.image), col(&parent.image));
        assert_eq!(same.ptr, parent.ptr);
    }

    #[test]
    fn batch_larger_than_queue_keeps_the_last_keys() {
        let mut q = FeatureQueue::new(4, 2, Device::Cpu);
        q.enqueue(&keys(0, 1), &keys(0, 1)); // ptr = 1
        q.enqueue(&keys(10, 6), &keys(10, 6)); // sequential writes at rows 1,2,3,0,1,2
        assert_eq!(col(&q.image), vec![13.0, 14.0, 15.0, 12.0]);
        assert_eq!(q.ptr, 3);
    }
}
