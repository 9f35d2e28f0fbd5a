using System.Diagnostics;

namespace OnnxDecoder.Tests.Shared;

/// <summary>Runs the `onnx-decoder` command built beside the tests, as a user would.</summary>
public static class OnnxDecoderCli
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static Result Run(params string[] args) => Run(TimeSpan.FromMinutes(5), args);

    /// <summary>Runs the command and waits for it (both streams read at once, so neither can fill
    /// its pipe and stall it); the test fails if it runs past <paramref name="timeout"/>.</summary>
    public static Result Run(TimeSpan timeout, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "onnx-decoder.dll"));
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"onnx-decoder {string.Join(' ', args)} ran past {timeout}");
        }
        return new Result(process.ExitCode, stdout, stderr.GetAwaiter().GetResult());
    }
}
