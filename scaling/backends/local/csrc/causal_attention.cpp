// Causal self-attention for fp32 CPU training that computes only the unmasked key blocks.
//
// For each (sequence, head) and each block of `block` queries ending at position j:
//   S = scale * Q_blk K[0:j]^T          (one sgemm; keys after j are never touched)
//   P = softmax(S) with keys > query masked, two passes over a whole row (max, then exp and sum);
//       lse = max + log(sum) is kept for the backward
//   O_blk = P V[0:j]
// The backward recomputes P = exp(S - lse) and, with D = rowsum(dO * O) (FlashAttention-2, Dao
// 2023, Algorithm 2): dV += P^T dO, dP = dO V^T, dS = P * (dP - D), dQ = scale dS K, dK += scale dS^T Q.
// Blocks run from the last (which spans every key, so beta = 0 initialises dK and dV) to the first.
// Work is split over (sequence, head) pairs; each writes only its own rows, so there are no races.
// Products go to the BLAS that PyTorch links (`sgemm_`), single-threaded inside the parallel loop.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <cmath>
#include <vector>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
                       const float*, const int*, const float*, const int*, const float*, float*, const int*);

namespace {

// Row-major C (m x n, ldc) = alpha op(A) op(B) + beta C, through the column-major BLAS.
void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc) {
  const char ca = ta ? 'T' : 'N', cb = tb ? 'T' : 'N';
  sgemm_(&cb, &ca, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
}

#if defined(__AVX2__) && defined(__FMA__)
inline __m256 exp256(__m256 x) {  // Cephes expf, about 1 ulp on [-88, 0]
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-87.0f));
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps(s, s, 1)));
}
#endif

// p[0:n] = exp(p - sub), returns the sum
inline float exp_sub_sum(float* p, int n, float sub) {
  int i = 0;
  float sum = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc = _mm256_setzero_ps(), vs = _mm256_set1_ps(sub);
  for (; i + 8 <= n; i += 8) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p + i), vs));
    _mm256_storeu_ps(p + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  sum = hsum(acc);
#endif
  for (; i < n; ++i) sum += (p[i] = std::exp(p[i] - sub));
  return sum;
}
inline float row_max(const float* p, int n) {
  int i = 0;
  float m = -INFINITY;
#if defined(__AVX2__) && defined(__FMA__)
  if (n >= 8) {
    __m256 vm = _mm256_loadu_ps(p);
    for (i = 8; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(p + i));
    m = hmax(vm);
  }
#endif
  for (; i < n; ++i) m = p[i] > m ? p[i] : m;
  return m;
}
inline void scale_row(float* p, int n, float f) {
  for (int i = 0; i < n; ++i) p[i] *= f;
}
inline float dot(const float* a, const float* b, int n) {
  int i = 0;
  float s = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  s = hsum(acc);
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

struct View {  // a (B, H, T, D) fp32 tensor whose last dimension is contiguous
  float* p;
  int64_t sb, sh, st;
  explicit View(const at::Tensor& t)
      : p(t.data_ptr<float>()), sb(t.stride(0)), sh(t.stride(1)), st(t.stride(2)) {}
  float* at(int64_t b, int64_t h) const { return p + b * sb + h * sh; }
};

void check(const at::Tensor& t, const char* name, const at::Tensor& q) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, name, " must be a float32 CPU tensor");
  TORCH_CHECK(t.dim() == 4 && t.sizes() == q.sizes(), name, " must have q's shape (B, H, T, D)");
  TORCH_CHECK(t.stride(3) == 1, name, " must be contiguous in its last dimension");
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           int64_t block) {
  check(q, "q", q); check(k, "k", q); check(v, "v", q);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  auto out = at::empty({B, T, H, D}, q.options()).transpose(1, 2);  // (B, H, T, D) view, rows (B, T)
  auto lse = at::empty({B, H, T}, q.options());
  View Q(q), K(k), V(v), O(out);
  float* L = lse.data_ptr<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int bq = static_cast<int>(std::min<int64_t>(block, T));
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> S(static_cast<size_t>(bq) * T);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float *q0 = Q.at(b, h), *k0 = K.at(b, h), *v0 = V.at(b, h);
      float* o0 = O.at(b, h);
      float* l0 = L + bh * T;
      for (int64_t i0 = 0; i0 < T; i0 += bq) {
        const int m = static_cast<int>(std::min<int64_t>(bq, T - i0)), n = static_cast<int>(i0 + m);
        gemm(false, true, m, n, D, scale, q0 + i0 * Q.st, Q.st, k0, K.st, 0.f, S.data(), n);
        for (int r = 0; r < m; ++r) {
          float* s = S.data() + static_cast<size_t>(r) * n;
          const int valid = static_cast<int>(i0) + r + 1;
          const float mx = row_max(s, valid);
          const float sum = exp_sub_sum(s, valid, mx);
          scale_row(s, valid, 1.0f / sum);
          for (int c = valid; c < n; ++c) s[c] = 0.f;
          l0[i0 + r] = mx + std::log(sum);
        }
        gemm(false, false, m, D, n, 1.f, S.data(), n, v0, V.st, 0.f, o0 + i0 * O.st, O.st);
      }
    }
  });
  return {out, lse};
}

void backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
              const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dq, const at::Tensor& dk,
              const at::Tensor& dv, int64_t block) {
  check(q, "q", q); check(k, "k", q); check(v, "v", q); check(out, "out", q); check(dout, "dout", q);
  check(dq, "dq", q); check(dk, "dk", q); check(dv, "dv", q);
  TORCH_CHECK(lse.is_contiguous() && lse.numel() == q.size(0) * q.size(1) * q.size(2), "lse must be (B, H, T)");
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  View Q(q), K(k), V(v), O(out), dO(dout), dQ(dq), dK(dk), dV(dv);
  const float* L = lse.data_ptr<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int bq = static_cast<int>(std::min<int64_t>(block, T));
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> P(static_cast<size_t>(bq) * T), dP(static_cast<size_t>(bq) * T), Dr(T);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float *q0 = Q.at(b, h), *k0 = K.at(b, h), *v0 = V.at(b, h), *o0 = O.at(b, h), *do0 = dO.at(b, h);
      float *dq0 = dQ.at(b, h), *dk0 = dK.at(b, h), *dv0 = dV.at(b, h);
      const float* l0 = L + bh * T;
      for (int64_t t = 0; t < T; ++t) Dr[t] = dot(do0 + t * dO.st, o0 + t * O.st, D);
      const int64_t last = ((T - 1) / bq) * bq;
      for (int64_t i0 = last; i0 >= 0; i0 -= bq) {  // the last block spans every key: beta = 0 there
        const int m = static_cast<int>(std::min<int64_t>(bq, T - i0)), n = static_cast<int>(i0 + m);
        const float beta = i0 == last ? 0.f : 1.f;
        gemm(false, true, m, n, D, scale, q0 + i0 * Q.st, Q.st, k0, K.st, 0.f, P.data(), n);
        for (int r = 0; r < m; ++r) {
          float* p = P.data() + static_cast<size_t>(r) * n;
          const int valid = static_cast<int>(i0) + r + 1;
          exp_sub_sum(p, valid, l0[i0 + r]);
          for (int c = valid; c < n; ++c) p[c] = 0.f;
        }
        gemm(true, false, n, D, m, 1.f, P.data(), n, do0 + i0 * dO.st, dO.st, beta, dv0, dV.st);
        gemm(false, true, m, n, D, 1.f, do0 + i0 * dO.st, dO.st, v0, V.st, 0.f, dP.data(), n);
        for (int r = 0; r < m; ++r) {
          float *p = P.data() + static_cast<size_t>(r) * n, *dp = dP.data() + static_cast<size_t>(r) * n;
          const float d = Dr[i0 + r];
          const int valid = static_cast<int>(i0) + r + 1;
          for (int c = 0; c < valid; ++c) dp[c] = p[c] * (dp[c] - d);
          for (int c = valid; c < n; ++c) dp[c] = 0.f;
        }
        gemm(false, false, m, D, n, scale, dP.data(), n, k0, K.st, 0.f, dq0 + i0 * dQ.st, dQ.st);
        gemm(true, false, n, D, m, scale, dP.data(), n, q0 + i0 * Q.st, Q.st, beta, dk0, dK.st);
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY(scaling_causal_attention, m) {
  m.def("forward(Tensor q, Tensor k, Tensor v, int block) -> (Tensor, Tensor)", &forward);
  m.def("backward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor(a!) dq, "
        "Tensor(b!) dk, Tensor(c!) dv, int block) -> ()", &backward);
}
