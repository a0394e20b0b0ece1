// Entry point of the benchmark runner. It holds no benchmarks yet: it says so and exits.
namespace VteKernels.Bench;

internal static class Program
{
    private static int Main(string[] args)
    {
        Console.WriteLine("no benchmarks are defined in this build");
        return 0;
    }
}
