// CPU kernels of the fused multi-step LIF (spikingformer/neurons/op.py registers them as the CPU kernels of
// spikingformer::lif_multistep and its backward). Built at first use by torch.utils.cpp_extension.load
// (spikingformer/neurons/build.py) with -ffp-contract=off and no fast-math, so every operation rounds as torch's do.
//
// Why by hand: the recurrence is memory-bound, and one pass over the time axis per block of neurons (the membrane
// in L1, the inner loop vectorized) reads X once and writes S and H once, where torch ops need about six passes
// per step; spikingjelly's own fused kernels are CUDA-only.
//
// Arrays are contiguous [T, N]; one at::parallel_for task owns a block of neurons for the whole time axis.

#include <torch/extension.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

constexpr int64_t kBlock = 512;

// The storage types the kernels take; the arithmetic is fp32 in all three.
#define LIF_DISPATCH(TYPE, NAME, ...)                 \
  AT_DISPATCH_SWITCH(TYPE, NAME,                      \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)    \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__))

// The value rounded to the storage type and widened back: the rounding of one torch op on a tensor of that
// dtype (torch computes reduced-precision CPU ops in fp32 and rounds the result); the identity for float.
template <typename scalar_t>
inline float rounded(float value) {
  return static_cast<float>(static_cast<scalar_t>(value));
}

// Cephes expf: 2^n * P(r), |r| <= ln2/2, about 1 ulp; branch-free so the backward loop vectorizes.
inline float exp_poly(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float fn = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  float r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(fn) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// H = V + (X - V) / tau, S = H >= v_th, V = S ? 0 : H, for t = 0..T-1: spikingjelly's operations in its order,
// each rounded to scalar_t as its torch path (state in the input's dtype) rounds them.
template <typename scalar_t>
void forward_kernel(const scalar_t* x, const scalar_t* v0, scalar_t* spikes, scalar_t* h, scalar_t* v_last,
                    int64_t T, int64_t N, float tau, float v_threshold) {
  const float v_th = rounded<scalar_t>(v_threshold);  // torch compares with the scalar cast to the tensor's dtype
  at::parallel_for(0, (N + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    float v[kBlock];
    for (int64_t block = begin; block < end; ++block) {
      const int64_t start = block * kBlock, n = std::min(kBlock, N - start);
      for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(v0[start + i]);
      for (int64_t t = 0; t < T; ++t) {
        const scalar_t* xt = x + t * N + start;
        scalar_t* st = spikes + t * N + start;
        scalar_t* ht = h + t * N + start;
        for (int64_t i = 0; i < n; ++i) {
          const float d = rounded<scalar_t>(static_cast<float>(xt[i]) - v[i]);
          const float hi = rounded<scalar_t>(v[i] + rounded<scalar_t>(d / tau));
          const bool fired = hi >= v_th;
          st[i] = static_cast<scalar_t>(fired ? 1.0f : 0.0f);
          ht[i] = static_cast<scalar_t>(hi);
          v[i] = fired ? 0.0f : hi;
        }
      }
      for (int64_t i = 0; i < n; ++i) v_last[start + i] = static_cast<scalar_t>(v[i]);
    }
  });
}

// dL/dH = dL/dS sg(H) + carry (H < v_th), dL/dX = dL/dH / tau, carry = dL/dH - dL/dX, for t = T-1..0, in fp32
// whatever the storage type; sg(h) = alpha sigmoid(alpha (h - v_th)) (1 - sigmoid(...)).
template <typename scalar_t>
void backward_kernel(const scalar_t* grad_spikes, const scalar_t* grad_v_last, const scalar_t* h,
                     scalar_t* grad_x, scalar_t* grad_v0, int64_t T, int64_t N, float tau, float v_threshold,
                     float alpha) {
  const float v_th = rounded<scalar_t>(v_threshold);  // the forward's threshold: no gradient through a fired reset
  at::parallel_for(0, (N + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    float carry[kBlock];
    for (int64_t block = begin; block < end; ++block) {
      const int64_t start = block * kBlock, n = std::min(kBlock, N - start);
      for (int64_t i = 0; i < n; ++i) carry[i] = static_cast<float>(grad_v_last[start + i]);
      for (int64_t t = T - 1; t >= 0; --t) {
        const scalar_t* ht = h + t * N + start;
        const scalar_t* gst = grad_spikes + t * N + start;
        scalar_t* gxt = grad_x + t * N + start;
        for (int64_t i = 0; i < n; ++i) {
          const float hi = static_cast<float>(ht[i]);
          const float sg = 1.0f / (1.0f + exp_poly(-(alpha * (hi - v_threshold))));
          const float gh = static_cast<float>(gst[i]) * ((1.0f - sg) * sg * alpha) + (hi < v_th ? carry[i] : 0.0f);
          const float g = gh / tau;
          gxt[i] = static_cast<scalar_t>(g);
          carry[i] = gh - g;
        }
      }
      for (int64_t i = 0; i < n; ++i) grad_v0[start + i] = static_cast<scalar_t>(carry[i]);
    }
  });
}

// The checks every kernel entry makes before it reads a raw pointer: CPU, one floating dtype, contiguous,
// [T, ...] against [...].
void check(const at::Tensor& seq, const at::Tensor& state, const char* seq_name, const char* state_name) {
  TORCH_CHECK(seq.device().is_cpu() && state.device().is_cpu(), "lif: CPU kernels got ", seq_name, " on ",
              seq.device(), " and ", state_name, " on ", state.device());
  TORCH_CHECK(seq.scalar_type() == state.scalar_type(), "lif: ", seq_name, " is ", seq.scalar_type(), " but ",
              state_name, " is ", state.scalar_type());
  TORCH_CHECK(seq.dim() >= 1 && seq.sizes().slice(1) == state.sizes(), "lif: ", seq_name, " ", seq.sizes(),
              " must be [T, *", state_name, ".shape] with ", state_name, " ", state.sizes());
  TORCH_CHECK(seq.is_contiguous() && state.is_contiguous(), "lif: CPU kernels read contiguous tensors");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& v0, double tau,
                                                       double v_threshold) {
  check(x, v0, "x", "v0");
  auto spikes = at::empty_like(x), h = at::empty_like(x), v_last = at::empty_like(v0);
  LIF_DISPATCH(x.scalar_type(), "lif_forward", [&] {
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), v0.const_data_ptr<scalar_t>(),
                             spikes.mutable_data_ptr<scalar_t>(), h.mutable_data_ptr<scalar_t>(),
                             v_last.mutable_data_ptr<scalar_t>(), x.size(0), v0.numel(), static_cast<float>(tau),
                             static_cast<float>(v_threshold));
  });
  return {spikes, h, v_last};
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_spikes, const at::Tensor& grad_v_last,
                                            const at::Tensor& h, double tau, double v_threshold, double alpha) {
  check(h, grad_v_last, "h", "grad_v_last");
  check(grad_spikes, grad_v_last, "grad_spikes", "grad_v_last");
  auto grad_x = at::empty_like(h), grad_v0 = at::empty_like(grad_v_last);
  LIF_DISPATCH(h.scalar_type(), "lif_backward", [&] {
    backward_kernel<scalar_t>(grad_spikes.const_data_ptr<scalar_t>(), grad_v_last.const_data_ptr<scalar_t>(),
                              h.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>(),
                              grad_v0.mutable_data_ptr<scalar_t>(), h.size(0), grad_v_last.numel(),
                              static_cast<float>(tau), static_cast<float>(v_threshold), static_cast<float>(alpha));
  });
  return {grad_x, grad_v0};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "spikes, H and the last membrane from x [T, ...] and v0 [...]");
  m.def("backward", &backward, "dL/dx and dL/dv0 from dL/dspikes, dL/dv_last and H");
}
