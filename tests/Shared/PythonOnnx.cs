using System.Diagnostics;

namespace OnnxDecoder.Tests.Shared;

/// <summary>Runs Debian python3-onnx's checker (onnx 1.12) on a saved model: an independent judge
/// of what we write. CI installs python3-onnx; a machine without it fails these tests loudly.</summary>
public static class PythonOnnx
{
    public const string Python = "/usr/bin/python3";

    /// <summary>Returns (exit code, combined output) of onnx.checker.check_model(path, full_check=True).</summary>
    public static (int ExitCode, string Output) FullCheck(string modelPath)
    {
        const string script = "import sys, onnx\nonnx.checker.check_model(sys.argv[1], full_check=True)\nprint('ok')";
        return Run(script, modelPath);
    }

    public static (int ExitCode, string Output) Run(string script, params string[] args)
    {
        if (!File.Exists(Python)) Assert.Fail($"{Python} is missing: install python3-onnx (apt-get install -y python3-onnx)");
        var start = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(script);
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(120_000)) { process.Kill(); Assert.Fail("python3 onnx checker timed out"); }
        string output = stdout.Result + stderr.Result;
        if (output.Contains("No module named 'onnx'", StringComparison.Ordinal))
            Assert.Fail("python3-onnx is not installed: apt-get install -y python3-onnx");
        return (process.ExitCode, output);
    }
}
