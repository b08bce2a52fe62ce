//! Tensors crossing the boundary through `TensorRef` (borrowed) and `OwnedTensor` (owned) keep
//! their storage and autograd graph: gradients flow back to the sender's leaf tensor.

use swift_plugin_tensors::tensor::{OwnedTensor, OwnedTensorExt, TensorRef, TensorRefExt};
use tch::{Kind, Tensor};

/// Stands in for a plugin entry point: an `extern "C"` function over the FFI handles.
extern "C" fn plugin_transform(x: TensorRef<'_>, w: TensorRef<'_>) -> OwnedTensor {
    let x = x.shallow_clone();
    let w = w.shallow_clone();
    OwnedTensor::new((x.matmul(&w) * 2.0 + 1.0).relu())
}

#[test]
fn autograd_flows_back_through_the_handles() {
    let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).reshape([2, 2]);
    let w = Tensor::from_slice(&[0.5f32, 1.0, -1.0, 2.0])
        .reshape([2, 2])
        .set_requires_grad(true);
    let y = plugin_transform(TensorRef::new(&x), TensorRef::new(&w)).into_tensor();
    // Hand-computed: x @ w = [[1*0.5 + -2*-1, 1*1 + -2*2], [3*0.5 + 0.5*-1, 3*1 + 0.5*2]]
    //                      = [[2.5, -3], [1, 4]]; *2+1 = [[6, -5], [3, 9]]; relu -> [[6, 0], [3, 9]]
    let got: Vec<f32> = y.flatten(0, -1).try_into().unwrap();
    assert_eq!(got, vec![6.0, 0.0, 3.0, 9.0]);
    y.sum(Kind::Float).backward();
    // d/dw sum(relu(2 x@w + 1)) = 2 * x^T @ mask, mask = [[1, 0], [1, 1]]
    // x^T = [[1, 3], [-2, 0.5]]; x^T @ mask = [[1+3, 3], [-2+0.5, 0.5]] = [[4, 3], [-1.5, 0.5]]
    let grad: Vec<f32> = w.grad().flatten(0, -1).try_into().unwrap();
    assert_eq!(grad, vec![8.0, 6.0, -3.0, 1.0]);
    // The sender's tensors are still alive and unchanged after the plugin dropped its handles.
    let x_after: Vec<f32> = x.flatten(0, -1).try_into().unwrap();
    assert_eq!(x_after, vec![1.0, -2.0, 3.0, 0.5]);
}

#[test]
fn an_unconverted_owned_tensor_is_freed_not_leaked() {
    let t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
    let handle = OwnedTensor::new(t.shallow_clone());
    drop(handle); // frees its handle; the storage lives on through `t`
    assert_eq!(f64::try_from(t.sum(Kind::Float)).unwrap(), 4.0);
}

#[test]
fn this_process_declares_its_tensor_side() {
    // What the registry checks plugins with tensors against, and how an unconverted
    // OwnedTensor is freed.
    let linked = swift_plugin_tensors::tensor::linked().expect("swift-plugin-tensors is linked");
    assert_eq!(
        Some(linked.libtorch),
        swift_plugin_tensors::LIBTORCH_VERSION
    );
    assert_eq!(Some(linked.tch), swift_plugin_tensors::TCH_VERSION);
    // Dropping a handed-over tensor without taking it back frees it (no leak, no crash).
    drop(OwnedTensor::new(Tensor::ones(
        [4],
        (Kind::Float, tch::Device::Cpu),
    )));
}
