/* vte_params.h: the launch-parameter structs of the CUDA kernels, one per kernel entry family, declared
 * once here and included by the kernel sources in kernels/. Each struct is mirrored field for field by a
 * C# struct with [StructLayout(LayoutKind.Sequential)] in src/VteKernels.Cuda/Kernels/KernelParams.cs;
 * a test compiles static_asserts generated from the C# layouts with NVRTC and parses this file for the
 * field lists, so the two sides cannot drift apart.
 *
 * Conventions: C only (no CUDA headers, no <stddef.h>), natural alignment, pointers first, then 64-bit
 * integers, then 32-bit fields; device pointers are untyped (the element type T of a kernel is chosen by
 * its -DVTE_DTYPE_* specialisation); "T" in the comments below is that type. Sizes are element counts.
 * A struct is passed by value as the kernel's only parameter (4 KiB limit; these are all under 128 B).
 */
#ifndef VTE_PARAMS_H
#define VTE_PARAMS_H

#ifdef __cplusplus
extern "C" {
#endif

/* y = a + b elementwise (add_T). y may be a or b. */
typedef struct AddParams {
    const void* a;          /* [count] T */
    const void* b;          /* [count] T */
    void* y;                /* [count] T */
    long long count;
} AddParams;

/* y[r] = table[ids[r]] (embedding_T). */
typedef struct EmbeddingParams {
    const void* table;      /* [vocab, dim] T */
    const int* ids;         /* [rows] */
    void* y;                /* [rows, dim] T */
    int rows;
    int dim;
    int vocab;
    int reserved;
} EmbeddingParams;

/* LLaMA RMSNorm per row (rms_norm_T); y may be x. */
typedef struct RmsNormParams {
    const void* x;          /* [rows, cols] T */
    const void* gamma;      /* [cols] T */
    void* y;                /* [rows, cols] T */
    int rows;
    int cols;
    float eps;
    int reserved;
} RmsNormParams;

/* residual += delta, then y = RmsNorm(residual) (add_rms_norm_T). */
typedef struct AddRmsNormParams {
    void* residual;         /* [rows, cols] T, updated in place */
    const void* delta;      /* [rows, cols] T */
    const void* gamma;      /* [cols] T */
    void* y;                /* [rows, cols] T; must not overlap residual or delta */
    int rows;
    int cols;
    float eps;
    int reserved;
} AddRmsNormParams;

/* torch LayerNorm over the last dimension (layer_norm_T); y may be x. */
typedef struct LayerNormParams {
    const void* x;          /* [rows, cols] T */
    const void* gamma;      /* [cols] T */
    const void* beta;       /* [cols] T */
    void* y;                /* [rows, cols] T */
    int rows;
    int cols;
    float eps;
    int reserved;
} LayerNormParams;

/* Rotary embedding in place, HF rotate_half layout (rope_T). */
typedef struct RopeParams {
    void* x;                /* row r, head h starts at x + r * row_stride + h * head_dim (elements of T) */
    const int* positions;   /* [rows] */
    const float* inv_freq;  /* [head_dim / 2], float32 as the CPU op computes it */
    int rows;
    int heads;
    int head_dim;
    int row_stride;
} RopeParams;

/* x = act(x + bias) in place (quick_gelu_T, gelu_T). bias may be null. */
typedef struct BiasActParams {
    void* x;                /* [rows, cols] T */
    const void* bias;       /* [cols] T or null */
    int rows;
    int cols;
} BiasActParams;

/* y = silu(gate) * up, each row at its own stride so gate|up may be one fused [rows, 2 * cols] (silu_mul_T). */
typedef struct SiluMulParams {
    const void* gate;       /* row r at gate + r * gate_stride */
    const void* up;         /* row r at up + r * up_stride */
    void* y;                /* row r at y + r * y_stride; may be gate or up */
    int rows;
    int cols;
    int gate_stride;
    int up_stride;
    int y_stride;
    int reserved;
} SiluMulParams;

/* Patches of one image as rows in the conv weight's [c, ky, kx] order (im2col_T). */
typedef struct Im2colParams {
    const float* pixels;    /* [channels, height, width] float32 */
    void* columns;          /* [(height / patch) * (width / patch), channels * patch * patch] T */
    int channels;
    int height;
    int width;
    int patch;
} Im2colParams;

/* y[1, n] = x[1, k] W[n, k]^T + bias, one warp per output row (gemv_T). */
typedef struct GemvParams {
    const void* x;          /* [k] T */
    const void* w;          /* [n, k] T */
    const void* bias;       /* [n] T or null */
    void* y;                /* [n] T */
    int n;
    int k;
} GemvParams;

/* y[m, n] = x[m, k] W[n, k]^T + bias, tiled, float32 accumulation: the fallback where cuBLASLt has no
 * algorithm (gemm_T). */
typedef struct GemmParams {
    const void* x;          /* [m, k] T */
    const void* w;          /* [n, k] T */
    const void* bias;       /* [n] T or null */
    void* y;                /* [m, n] T */
    int m;
    int n;
    int k;
    int reserved;
} GemmParams;

/* Index of the first maximal logit per row (argmax_T). */
typedef struct ArgmaxParams {
    const void* logits;     /* [rows, vocab] T */
    int* out;               /* [rows] */
    int rows;
    int vocab;
} ArgmaxParams;

/* Temperature, top-k, top-p, then a draw with Philox4x32-10 (sample_T). */
typedef struct SampleParams {
    const void* logits;             /* [rows, vocab] T */
    unsigned long long* scratch;    /* [rows, vocab] fixed-point weights, overwritten */
    int* out;                       /* [rows] */
    unsigned long long seed;        /* Philox key */
    unsigned long long offset;      /* Philox counter words 0-1: the caller's step counter */
    int rows;
    int vocab;
    int top_k;                      /* 0: no limit */
    float temperature;              /* > 0 */
    float top_p;                    /* (0, 1]; 1: no limit */
    int reserved;
} SampleParams;

/* The uniforms the sampler draws: out[i] for row i (sample_uniforms). */
typedef struct UniformsParams {
    double* out;                    /* [count] */
    unsigned long long seed;
    unsigned long long offset;
    int count;
    int reserved;
} UniformsParams;

/* Unfused reference attention, one block per (query row, query head) (attention_reference_T). */
typedef struct AttentionParams {
    const void* q;          /* query row i, head h at q + i * q_stride + h * head_dim */
    const void* k;          /* key j, kv head g at k + j * kv_stride + g * head_dim */
    const void* v;          /* as k */
    void* out;              /* as q, with out_stride */
    int nq;
    int nk;
    int q_heads;
    int kv_heads;
    int head_dim;
    int q_stride;
    int kv_stride;
    int out_stride;
    int causal;             /* 1: query i sees keys j <= nk - nq + i */
    float scale;            /* 1 / sqrt(head_dim) */
} AttentionParams;

/* Decode attention, kernel 1 of 2 (flash_decode_split_T): grid (splits, kv_heads * row groups of 8); each
 * block writes one float32 partial (max, sum, acc[head_dim]) per (query, head) row for its key chunk. */
typedef struct FlashDecodeParams {
    const void* q;          /* query row i, head h at q + i * q_stride + h * head_dim */
    const void* k;          /* key j, kv head g at k + j * kv_stride + g * head_dim */
    const void* v;          /* as k */
    float* partial_acc;     /* [nq * q_heads, splits, head_dim] float32, unnormalised sum of p_j v_j */
    float* partial_ms;      /* [nq * q_heads, splits, 2] float32: running max, sum of exp(score - max) */
    int nq;                 /* <= 8 */
    int nk;
    int q_heads;
    int kv_heads;
    int head_dim;           /* <= 256 */
    int q_stride;
    int kv_stride;
    int splits;             /* <= 1024 */
    int chunk;              /* keys per split: split s takes [s * chunk, min(nk, (s + 1) * chunk)) */
    int causal;             /* 1: query i sees keys j <= nk - nq + i */
    float scale;            /* 1 / sqrt(head_dim) */
    int reserved;
} FlashDecodeParams;

/* Decode attention, kernel 2 of 2 (flash_decode_merge_T): one block per (query, head) row sums the splits. */
typedef struct FlashDecodeMergeParams {
    const float* partial_acc; /* as FlashDecodeParams */
    const float* partial_ms;  /* as FlashDecodeParams */
    void* out;              /* query row i, head h at out + i * out_stride + h * head_dim */
    int rows;               /* nq * q_heads */
    int q_heads;
    int head_dim;
    int out_stride;
    int splits;
    int reserved;
} FlashDecodeMergeParams;
/* flash_attention_T: fused prefill attention (kernels/flash_attention.cu). */
typedef struct FlashAttentionParams {
    const void* q;          /* query row i, head h at q + i * q_stride + h * head_dim (16-byte aligned rows) */
    const void* k;          /* key j, kv head g at k + j * kv_stride + g * head_dim */
    const void* v;          /* as k */
    void* out;              /* as q, with out_stride */
    const int* key_end;     /* optional [nq]: query i sees keys j < key_end[i] (null: no such limit) */
    float* mass;            /* optional [nq * q_heads]: softmax mass on the mass ranges (null: not computed) */
    int nq;
    int nk;
    int q_heads;
    int kv_heads;
    int head_dim;           /* 64, 80, 96 or 128 */
    int q_stride;
    int kv_stride;
    int out_stride;
    int causal;             /* 1: query i sees keys j <= nk - nq + i */
    int mass_ranges;        /* ranges in use, 0..8 */
    int range_start[8];     /* key range r is [range_start[r], range_end[r]) */
    int range_end[8];
    float scale;            /* 1 / sqrt(head_dim) */
} FlashAttentionParams;

#ifdef __cplusplus
}
#endif

#endif /* VTE_PARAMS_H */
