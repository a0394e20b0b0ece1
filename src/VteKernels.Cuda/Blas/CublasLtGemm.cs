// The prefill GEMMs through cuBLASLt: y[m, n] = x[m, k] · W[n, k]ᵀ (+ bias[n]) with x, W, y row-major in
// the backend's element type (bf16, f16 or f32), float32 accumulation and scale.
//
// cuBLASLt is column-major, and a row-major matrix is the column-major view of its transpose, so the
// product is computed as yᵀ[n, m] = W[n, k] · xᵀ[k, m]:
//   A = W  as stored: column-major [k, n], ld k, used transposed (op(A) = [n, k]);
//   B = x  as stored: column-major [k, m], ld k, not transposed;
//   C = D = y as stored: column-major [n, m], ld n.
// The bias epilogue adds bias[n] along D's rows, i.e. per output feature, in the same pass. A plan (the
// descriptors and the heuristic's algorithm) is made once per (m, n, k, bias, pointer alignments) and
// reused; the 32 MiB workspace comes from the device pool once. Pointer alignments enter the plan because
// a tensor view (a row slice) may be only 2-byte aligned, and cuBLASLt assumes 256 unless told.
// F32 uses CUBLAS_COMPUTE_32F (true fp32) unless TF32 is allowed. Where the heuristic finds no algorithm
// (CUBLAS_STATUS_NOT_SUPPORTED, or none returned: for bf16/f16 a leading dimension that is not a multiple of
// 16 bytes, such as CLIP's patch embedding with K = 588) TryRun says so and the backend runs its own
// kernel (kernels/gemm.cu); that answer is remembered per plan key too.
using static VteKernels.Cuda.Interop.CublasLt;

namespace VteKernels.Cuda;

/// <summary>How y = x·Wᵀ maps onto cuBLASLt's column-major operands.</summary>
/// <param name="ARows">Rows of A's layout (k).</param>
/// <param name="ACols">Columns of A's layout (n).</param>
/// <param name="ALd">Leading dimension of A (k).</param>
/// <param name="TransA">Operation on A (transpose).</param>
/// <param name="BRows">Rows of B's layout (k).</param>
/// <param name="BCols">Columns of B's layout (m).</param>
/// <param name="BLd">Leading dimension of B (k).</param>
/// <param name="TransB">Operation on B (none).</param>
/// <param name="DRows">Rows of C/D's layout (n).</param>
/// <param name="DCols">Columns of C/D's layout (m).</param>
/// <param name="DLd">Leading dimension of C/D (n).</param>
internal readonly record struct GemmMapping(long ARows, long ACols, long ALd, int TransA, long BRows, long BCols, long BLd, int TransB,
    long DRows, long DCols, long DLd)
{
    /// <summary>The mapping of y[m, n] = x[m, k] · W[n, k]ᵀ.</summary>
    public static GemmMapping ForLinear(int m, int n, int k) =>
        new(k, n, k, CUBLAS_OP_T, k, m, k, CUBLAS_OP_N, n, m, n);
}

/// <summary>cuBLASLt GEMMs of one context and element type.</summary>
internal sealed class CublasLtGemm : IDisposable
{
    /// <summary>Workspace offered to cuBLASLt (NVIDIA recommends 32 MiB on Hopper).</summary>
    public const long WorkspaceBytes = 32L << 20;

    private readonly record struct PlanKey(int M, int N, int K, bool Bias, uint AlignX, uint AlignW, uint AlignY, uint AlignBias);

    private sealed class Plan(CublasLtDescriptorHandle desc, CublasLtDescriptorHandle a, CublasLtDescriptorHandle b, CublasLtDescriptorHandle d,
        cublasLtMatmulHeuristicResult_t algo) : IDisposable
    {
        public CublasLtDescriptorHandle Desc { get; } = desc;
        public CublasLtDescriptorHandle A { get; } = a;
        public CublasLtDescriptorHandle B { get; } = b;
        public CublasLtDescriptorHandle D { get; } = d;
        public cublasLtMatmulHeuristicResult_t Algo = algo;

        public void Dispose()
        {
            Desc.Dispose();
            A.Dispose();
            B.Dispose();
            D.Dispose();
        }
    }

    private readonly CudaContext _context;
    private readonly CublasLtHandle _handle;
    private readonly DeviceBuffer _workspace;
    private readonly int _dataType, _computeType;
    private readonly Dictionary<PlanKey, Plan?> _plans = []; // null: cuBLASLt has no algorithm

    /// <summary>The element type of A, B, C and D.</summary>
    public DType DType { get; }

    public CublasLtGemm(CudaContext context, DevicePool pool, DType dtype, bool allowTf32)
    {
        CudaLibraries.Require(CudaLibrary.CublasLt);
        _context = context;
        DType = dtype;
        _dataType = dtype switch { DType.BF16 => CUDA_R_16BF, DType.F16 => CUDA_R_16F, _ => CUDA_R_32F };
        _computeType = dtype == DType.F32 && allowTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
        context.MakeCurrent();
        _handle = CublasLtHandle.Create(context.Handle);
        _workspace = pool.Rent(WorkspaceBytes);
    }

    /// <summary>The loaded cuBLASLt's version number (e.g. 130000).</summary>
    public static long Version => (long)cublasLtGetVersion();

    /// <summary>
    /// Queues y[m, n] = x[m, k] · W[n, k]ᵀ (+ bias) on the context's stream and returns true, or returns false
    /// (queuing nothing) when cuBLASLt has no algorithm for the problem. m, n, k must be positive.
    /// </summary>
    /// <exception cref="CudaException">A cuBLASLt call failed.</exception>
    public unsafe bool TryRun(ulong x, ulong w, ulong bias, ulong y, int m, int n, int k)
    {
        _context.MakeCurrent();
        var key = new PlanKey(m, n, k, bias != 0, Alignment(x), Alignment(w), Alignment(y), bias == 0 ? 0 : Alignment(bias));
        if (!_plans.TryGetValue(key, out var plan))
        {
            plan = MakePlan(key);
            _plans[key] = plan;
        }
        if (plan is null) return false;
        if (bias != 0)
            CudaCheck.Blas(cublasLtMatmulDescSetAttribute(plan.Desc.DangerousGetHandle(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, (nuint)sizeof(ulong)),
                nameof(cublasLtMatmulDescSetAttribute), "bias pointer");
        float alpha = 1f, beta = 0f;
        fixed (cublasLtMatmulHeuristicResult_t* algo = &plan.Algo)
        {
            CudaCheck.Blas(cublasLtMatmul(_handle.DangerousGetHandle(), plan.Desc.DangerousGetHandle(), &alpha,
                    w, plan.A.DangerousGetHandle(), x, plan.B.DangerousGetHandle(), &beta,
                    y, plan.D.DangerousGetHandle(), y, plan.D.DangerousGetHandle(),
                    algo->algo, _workspace.Pointer, (nuint)WorkspaceBytes, _context.StreamPtr),
                nameof(cublasLtMatmul), Describe(key));
        }
        return true;
    }

    /// <summary>The plan of a problem, or null when the heuristic finds no algorithm for it.</summary>
    private unsafe Plan? MakePlan(PlanKey key)
    {
        var map = GemmMapping.ForLinear(key.M, key.N, key.K);
        var ctx = _context.Handle;
        var desc = CublasLtDescriptorHandle.Matmul(ctx, _computeType, CUDA_R_32F);
        CublasLtDescriptorHandle? a = null, b = null, d = null, pref = null;
        try
        {
            int transA = map.TransA, transB = map.TransB;
            SetDesc(desc, CUBLASLT_MATMUL_DESC_TRANSA, &transA, sizeof(int));
            SetDesc(desc, CUBLASLT_MATMUL_DESC_TRANSB, &transB, sizeof(int));
            uint epilogue = key.Bias ? (uint)CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
            SetDesc(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(uint));
            a = CublasLtDescriptorHandle.Layout(ctx, _dataType, map.ARows, map.ACols, map.ALd);
            b = CublasLtDescriptorHandle.Layout(ctx, _dataType, map.BRows, map.BCols, map.BLd);
            d = CublasLtDescriptorHandle.Layout(ctx, _dataType, map.DRows, map.DCols, map.DLd);

            pref = CublasLtDescriptorHandle.Preference(ctx);
            ulong workspace = WorkspaceBytes;
            SetPref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(ulong));
            uint alignA = key.AlignW, alignB = key.AlignX, alignD = key.AlignY;
            SetPref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &alignA, sizeof(uint));
            SetPref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &alignB, sizeof(uint));
            SetPref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &alignD, sizeof(uint));
            SetPref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &alignD, sizeof(uint));

            cublasLtMatmulHeuristicResult_t result;
            var status = cublasLtMatmulAlgoGetHeuristic(_handle.DangerousGetHandle(), desc.DangerousGetHandle(), a.DangerousGetHandle(),
                b.DangerousGetHandle(), d.DangerousGetHandle(), d.DangerousGetHandle(), pref.DangerousGetHandle(), 1, &result, out int returned);
            if (status == cublasStatus_t.CUBLAS_STATUS_NOT_SUPPORTED || (status == cublasStatus_t.CUBLAS_STATUS_SUCCESS && returned == 0))
            {
                desc.Dispose();
                a.Dispose();
                b.Dispose();
                d.Dispose();
                return null;
            }
            CudaCheck.Blas(status, nameof(cublasLtMatmulAlgoGetHeuristic), Describe(key));
            return new Plan(desc, a, b, d, result);
        }
        catch
        {
            desc.Dispose();
            a?.Dispose();
            b?.Dispose();
            d?.Dispose();
            throw;
        }
        finally
        {
            pref?.Dispose();
        }
    }

    private static unsafe void SetDesc(CublasLtDescriptorHandle desc, int attribute, void* value, int size) =>
        CudaCheck.Blas(cublasLtMatmulDescSetAttribute(desc.DangerousGetHandle(), attribute, value, (nuint)size), nameof(cublasLtMatmulDescSetAttribute), $"attribute {attribute}");

    private static unsafe void SetPref(CublasLtDescriptorHandle pref, int attribute, void* value, int size) =>
        CudaCheck.Blas(cublasLtMatmulPreferenceSetAttribute(pref.DangerousGetHandle(), attribute, value, (nuint)size), nameof(cublasLtMatmulPreferenceSetAttribute), $"attribute {attribute}");

    /// <summary>The largest power of two (at most 256) dividing <paramref name="pointer"/>.</summary>
    internal static uint Alignment(ulong pointer) => pointer == 0 ? 256u : (uint)Math.Min(256ul, pointer & (~pointer + 1));

    private string Describe(PlanKey k) =>
        $"y[{k.M}, {k.N}] = x[{k.M}, {k.K}] · W[{k.N}, {k.K}]ᵀ{(k.Bias ? " + bias" : "")} in {DType} (alignments x {k.AlignX}, W {k.AlignW}, y {k.AlignY})";

    public void Dispose()
    {
        foreach (var p in _plans.Values) p?.Dispose();
        _plans.Clear();
        _handle.Dispose();
        _workspace.Dispose();
    }
}
