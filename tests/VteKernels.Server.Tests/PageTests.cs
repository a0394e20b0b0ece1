// The web page in a real browser: Debian's Chromium, headless, driven by Playwright (never Playwright's own
// browser download). Load the page, upload the sample image, ask, watch the answer stream in, see the
// attention-mass chart with the exit marked, then compare two policies; screenshots go to the test output
// folder. Skips, saying why, only when /usr/bin/chromium is missing (.ci/run installs it with apt-get).
using Microsoft.Playwright;

namespace VteKernels.Server.Tests;

[Collection("model")]
public sealed class PageTests
{
    private const string Chromium = "/usr/bin/chromium";

    [Fact]
    public async Task The_page_streams_an_answer_about_an_uploaded_image_and_draws_the_chart()
    {
        if (!File.Exists(Chromium)) Assert.Skip($"needs Debian's chromium at {Chromium} (apt-get install chromium; .ci/run installs it)");
        await using var s = await TinyModel.StartServer();
        using var playwright = await Playwright.CreateAsync();
        var profile = Directory.CreateTempSubdirectory("vte-chromium-");
        try
        {
            await using var browser = await playwright.Chromium.LaunchPersistentContextAsync(profile.FullName, new BrowserTypeLaunchPersistentContextOptions
            {
                ExecutablePath = Chromium,
                Headless = true,
                // The machine's network is closed: without these, Chromium floods it with background connections.
                Args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
                ViewportSize = new ViewportSize { Width = 1280, Height = 1000 },
                Timeout = 60_000,
            });
            var page = browser.Pages.Count > 0 ? browser.Pages[0] : await browser.NewPageAsync();
            page.SetDefaultTimeout(60_000);
            var errors = new List<string>();
            var foreign = new List<string>();
            page.Console += (_, m) => { if (m.Type == "error") errors.Add(m.Text); };
            page.PageError += (_, e) => errors.Add(e);
            page.Request += (_, r) => { if (!r.Url.StartsWith(s.Address.ToString(), StringComparison.Ordinal) && !r.Url.StartsWith("data:", StringComparison.Ordinal)) foreign.Add(r.Url); };

            await page.GotoAsync(s.Address.ToString());
            await page.WaitForFunctionAsync("() => document.getElementById('model').textContent.startsWith('model ')");
            await page.SetInputFilesAsync("#image-input", Path.Combine(AppContext.BaseDirectory, "assets", "sample.png"));
            await page.WaitForSelectorAsync("#preview:not([hidden])");
            await page.FillAsync("#question", "What is in the picture?");
            await page.FillAsync("#policy-a .exit", "layer:2");
            await page.FillAsync("#max-tokens", "40");
            await page.EvaluateAsync("() => { window.textChanges = 0; new MutationObserver(() => window.textChanges++).observe(document.getElementById('answer-a'), { childList: true, characterData: true, subtree: true }); }");
            await page.ClickAsync("#ask");
            await page.WaitForSelectorAsync("#report-a tr");

            var answer = await page.TextContentAsync("#answer-a");
            Assert.False(string.IsNullOrEmpty(answer), "no answer text");
            int changes = await page.EvaluateAsync<int>("() => window.textChanges");
            Assert.True(changes >= 2, $"the answer arrived in {changes} piece(s), not streamed");
            // Layers 0 and 1 saw the image and measured its attention mass; the image left after 2 of 4 layers.
            Assert.Equal(2, await page.Locator("#chart-a .mass-point").CountAsync());
            Assert.Equal(1, await page.Locator("#chart-a .exit-marker").CountAsync());
            Assert.Contains("after 2 of 4 layers", await page.TextContentAsync("#report-a"));
            var dir = Path.Combine(AppContext.BaseDirectory, "screenshots");
            Directory.CreateDirectory(dir);
            var first = Path.Combine(dir, "page-answer.png");
            await page.ScreenshotAsync(new PageScreenshotOptions { Path = first, FullPage = true });

            await page.ClickAsync("#compare");
            await page.WaitForFunctionAsync("() => document.querySelectorAll('#compare-table th').length === 4");
            Assert.Contains("after 1 of 4 layers", await page.TextContentAsync("#report-b"));
            Assert.Equal(1, await page.Locator("#chart-b .mass-point").CountAsync());
            var table = await page.TextContentAsync("#compare-table");
            Assert.Contains("multiply-adds", table);
            var second = Path.Combine(dir, "page-compare.png");
            await page.ScreenshotAsync(new PageScreenshotOptions { Path = second, FullPage = true });
            TestContext.Current.TestOutputHelper?.WriteLine($"screenshots: {first}, {second}");

            // A bad image is reported on the page, and the page keeps working.
            await page.SetInputFilesAsync("#image-input", new FilePayload { Name = "notes.png", MimeType = "image/png", Buffer = "not an image"u8.ToArray() });
            await page.WaitForFunctionAsync("() => document.getElementById('preview').src.startsWith('data:image/png;base64,bm90')");
            await page.ClickAsync("#ask");
            await page.WaitForSelectorAsync("#error:not([hidden])");
            Assert.Contains("400", await page.TextContentAsync("#error"));

            Assert.Empty(foreign);
            Assert.DoesNotContain(errors, e => !e.Contains("400", StringComparison.Ordinal));
        }
        finally
        {
            try { profile.Delete(recursive: true); }
            catch (IOException) { }
        }
    }
}
