// One request at a time on a model (until batching exists): requests wait in arrival order for the model,
// up to a limit of waiting requests; past it they are refused (503) at once instead of piling up.
namespace VteKernels.Server;

/// <summary>A FIFO of requests for one model.</summary>
internal sealed class RequestQueue(int maxWaiting)
{
    private readonly SemaphoreSlim _model = new(1, 1);
    private int _inside;   // running + waiting

    public int MaxWaiting => maxWaiting;

    /// <summary>Requests running (0 or 1).</summary>
    public int Running => Math.Min(Volatile.Read(ref _inside), 1);

    /// <summary>Requests waiting for the model.</summary>
    public int Waiting => Math.Max(Volatile.Read(ref _inside) - 1, 0);

    /// <summary>Waits for the model; dispose the result to hand it on.</summary>
    /// <exception cref="ApiError">503 when <see cref="MaxWaiting"/> requests already wait.</exception>
    /// <exception cref="OperationCanceledException">Cancelled while waiting.</exception>
    public async Task<IDisposable> EnterAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Increment(ref _inside) > maxWaiting + 1)
        {
            Interlocked.Decrement(ref _inside);
            throw new ApiError(503, $"the server is busy: one request runs at a time and {maxWaiting} are already waiting; try again later", code: "queue_full", type: "server_error");
        }
        try
        {
            await _model.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Interlocked.Decrement(ref _inside);
            throw;
        }
        return new Turn(this);
    }

    private sealed class Turn(RequestQueue queue) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) != 0) return;
            queue._model.Release();
            Interlocked.Decrement(ref queue._inside);
        }
    }
}
