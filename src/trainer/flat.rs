//! Flat parameter buffers: a model's trainable tensors become views into one contiguous
//! buffer, so a pass over every parameter (momentum sync, drift, reference copy, AdamW) is a
//! few kernels over one tensor instead of a loop of small kernels per tensor.
use tch::{Kind, Tensor};

/// Makes every tensor of `params` a view into one new contiguous buffer (same values, same
/// autograd leaf identity) and returns the buffer. All tensors must share dtype and device.
pub fn flatten(params: &[Tensor]) -> Tensor {
    let _guard = tch::no_grad_guard();
    let Some(first) = params.first() else {
        return Tensor::zeros([0], (Kind::Float, tch::Device::Cpu));
    };
    let pieces: Vec<Tensor> = params.iter().map(|p| p.detach().reshape([-1])).collect();
    let buf = Tensor::cat(&pieces, 0).to_kind(first.kind());
    drop(pieces);
    for (p, v) in params.iter().zip(views(&buf, params)) {
        p.shallow_clone().set_data(&v);
    }
    buf
}

/// Views of `buf` with the shapes of `like`, in order.
pub fn views(buf: &Tensor, like: &[Tensor]) -> Vec<Tensor> {
    let mut off = 0;
    like.iter()
        .map(|p| {
            let n = p.numel() as i64;
            let v = buf.narrow(0, off, n).view(p.size().as_slice());
            off += n;
            v
        })
        .collect()
}

/// Whether every tensor of `params` is a view into `buf` at its flat position.
pub fn is_flat_view(buf: &Tensor, params: &[Tensor]) -> bool {
    let base = buf.data_ptr() as usize;
    let elt = buf.kind().elt_size_in_bytes();
    let mut off = 0usize;
    params.iter().all(|p| {
        let ok = p.defined() && p.data_ptr() as usize == base + off * elt && p.is_contiguous();
        off += p.numel();
        ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn parameters_become_views_with_their_values() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0])
            .view([2, 2])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&[5.0f32]).set_requires_grad(true);
        let before: Vec<Tensor> = [&a, &b].iter().map(|t| t.detach().copy()).collect();
        let mut buf = flatten(&[a.shallow_clone(), b.shallow_clone()]);
        assert_eq!(buf.size(), [5]);
        assert!(a.equal(&before[0]) && b.equal(&before[1]));
        assert!(a.requires_grad() && is_flat_view(&buf, &[a.shallow_clone(), b.shallow_clone()]));
        tch::no_grad(|| {
            let _ = buf.g_mul_scalar_(2.0);
        });
        assert_eq!(
            Vec::<f32>::try_from(a.detach().view([-1])).unwrap(),
            [2.0, 4.0, 6.0, 8.0]
        );
        assert_eq!(b.double_value(&[0]), 10.0);
        // Gradients still reach the (now viewed) leaves.
        (&a * 3.0).sum(Kind::Float).backward();
        assert!(a
            .grad()
            .equal(&Tensor::full([2, 2], 3.0, (Kind::Float, Device::Cpu))));
    }
}
