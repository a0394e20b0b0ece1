// Entry point of the vte command-line tool. It has no commands yet: it prints a usage line and exits
// with status 2, the conventional code for a usage error.
namespace VteKernels.Cli;

internal static class Program
{
    private static int Main(string[] args)
    {
        Console.Error.WriteLine("usage: vte <command> [options] (no commands are available in this build)");
        return 2;
    }
}
