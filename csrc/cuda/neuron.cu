// Neurons on the GPU (declared in csrc/common/neuron.h): one kernel instance per kind (the kind
// is a template parameter, switched on once in the launcher).
// Thread mapping: grid_stride.cuh (float4 groups where every pointer is 16-byte aligned, then
// the scalar tail).
#include "cuda_check.h"
#include "grid_stride.cuh"
#include "index_width.cuh"
#include "neuron.h"

namespace convnet {
namespace {

template <NeuronKind K>
__device__ __forceinline__ float4 neuron_fwd4(float4 x, float a, float b) {
  return make_float4(Neuron<K>::fwd(x.x, a, b), Neuron<K>::fwd(x.y, a, b),
                     Neuron<K>::fwd(x.z, a, b), Neuron<K>::fwd(x.w, a, b));
}

template <NeuronKind K, bool kVec4, class I>
__global__ void neuron_fwd_kernel(NeuronParams p, const float* x, float* y, I n) {
  grid_stride_vec4<kVec4>(
      n,
      [&](I i) {
        reinterpret_cast<float4*>(y)[i] =
            neuron_fwd4<K>(reinterpret_cast<const float4*>(x)[i], p.a, p.b);
      },
      [&](I j) { y[j] = Neuron<K>::fwd(x[j], p.a, p.b); });
}

template <NeuronKind K>
__device__ __forceinline__ float neuron_bwd1(float dy, float x, float y, float dx, float a,
                                             float b, bool accumulate) {
  float g = dy * Neuron<K>::grad(x, y, a, b);
  return accumulate ? dx + g : g;
}

// x or y may be a stand-in (dy) when the kind does not read it: the loads are then dead code.
template <NeuronKind K, bool kVec4, class I>
__global__ void neuron_bwd_kernel(NeuronParams p, const float* dy, const float* x, const float* y,
                                  float* dx, I n, bool accumulate) {
  grid_stride_vec4<kVec4>(
      n,
      [&](I i) {
        const float4 d = reinterpret_cast<const float4*>(dy)[i];
        const float4 xv = reinterpret_cast<const float4*>(x)[i];
        const float4 yv = reinterpret_cast<const float4*>(y)[i];
        float4 o =
            accumulate ? reinterpret_cast<float4*>(dx)[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        o.x = neuron_bwd1<K>(d.x, xv.x, yv.x, o.x, p.a, p.b, accumulate);
        o.y = neuron_bwd1<K>(d.y, xv.y, yv.y, o.y, p.a, p.b, accumulate);
        o.z = neuron_bwd1<K>(d.z, xv.z, yv.z, o.z, p.a, p.b, accumulate);
        o.w = neuron_bwd1<K>(d.w, xv.w, yv.w, o.w, p.a, p.b, accumulate);
        reinterpret_cast<float4*>(dx)[i] = o;
      },
      [&](I j) {
        dx[j] = neuron_bwd1<K>(dy[j], x[j], y[j], accumulate ? dx[j] : 0.f, p.a, p.b, accumulate);
      });
}

constexpr int kThreads = 256;

template <NeuronKind K>
struct Launch {
  static void fwd(const NeuronParams& p, const float* x, float* y, int64_t n) {
    const unsigned grid = grid_for_quads(n, kThreads);
    with_index(n + int64_t(grid) * kThreads, [&](auto index) {
      using I = decltype(index);
      if (aligned16(x) && aligned16(y))
        CONVNET_LAUNCH((neuron_fwd_kernel<K, true, I>), grid, kThreads, 0, current_stream(), p, x,
                       y, I(n));
      else
        CONVNET_LAUNCH((neuron_fwd_kernel<K, false, I>), grid, kThreads, 0, current_stream(), p,
                       x, y, I(n));
    });
  }
  static void bwd(const NeuronParams& p, const float* dy, const float* x, const float* y,
                  float* dx, int64_t n, bool accumulate) {
    const unsigned grid = grid_for_quads(n, kThreads);
    with_index(n + int64_t(grid) * kThreads, [&](auto index) {
      using I = decltype(index);
      if (aligned16(dy) && aligned16(x) && aligned16(y) && aligned16(dx))
        CONVNET_LAUNCH((neuron_bwd_kernel<K, true, I>), grid, kThreads, 0, current_stream(), p,
                       dy, x, y, dx, I(n), accumulate);
      else
        CONVNET_LAUNCH((neuron_bwd_kernel<K, false, I>), grid, kThreads, 0, current_stream(), p,
                       dy, x, y, dx, I(n), accumulate);
    });
  }
};

template <class F>
void dispatch(NeuronKind k, F&& f) {
  switch (k) {
    case NeuronKind::ident: return f(Launch<NeuronKind::ident>());
    case NeuronKind::relu: return f(Launch<NeuronKind::relu>());
    case NeuronKind::logistic: return f(Launch<NeuronKind::logistic>());
    case NeuronKind::tanh: return f(Launch<NeuronKind::tanh>());
    case NeuronKind::brelu: return f(Launch<NeuronKind::brelu>());
    case NeuronKind::softrelu: return f(Launch<NeuronKind::softrelu>());
    case NeuronKind::abs: return f(Launch<NeuronKind::abs>());
    case NeuronKind::square: return f(Launch<NeuronKind::square>());
    case NeuronKind::sqrt: return f(Launch<NeuronKind::sqrt>());
    case NeuronKind::linear: return f(Launch<NeuronKind::linear>());
  }
  CONVNET_CHECK(false, "neuron: unknown kind " << int(k));
}

}  // namespace

void neuron_fwd_cuda(const NeuronParams& p, const float* x, float* y, int64_t n) {
  if (n == 0) return;
  dispatch(p.kind, [&](auto launch) { launch.fwd(p, x, y, n); });
}

void neuron_bwd_cuda(const NeuronParams& p, const float* dy, const float* x, const float* y,
                     float* dx, int64_t n, bool accumulate) {
  if (n == 0) return;
  dispatch(p.kind, [&](auto launch) {
    launch.bwd(p, dy, x ? x : dy, y ? y : dy, dx, n, accumulate);
  });
}

}  // namespace convnet
