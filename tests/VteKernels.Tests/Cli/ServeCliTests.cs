// `vte serve`'s command line: bad options are one "error:" line and exit 2 before any model loads, and a port
// that is taken is reported the same way. (The server itself is tested in VteKernels.Server.Tests.)
using System.Net;
using System.Net.Sockets;
using Xunit;
using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class ServeCliTests
{
    [Theory]
    [InlineData("--host", "example.com", "is not an IP address")]
    [InlineData("--port", "70000", "--port must be in 0..65535")]
    [InlineData("--max-body-mb", "0", "--max-body-mb must be in 1..4096")]
    [InlineData("--max-waiting", "-1", "--max-waiting must be >= 0")]
    [InlineData("--exit", "later", "is not one of none")]
    [InlineData("--prompt-style", "chatml", "chatml")]
    public void Bad_options_are_one_error_line(string option, string value, string expected) =>
        AssertUserError(Vte("serve", "-m", TestModels.Tiny(), option, value), expected);

    [Fact]
    public void A_port_in_use_is_one_error_line()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        int port = ((IPEndPoint)taken.LocalEndpoint).Port;
        AssertUserError(Vte("serve", "-m", TestModels.Tiny(), "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture)), $"cannot listen on 127.0.0.1:{port}");
    }
}
