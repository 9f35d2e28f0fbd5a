using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Cli;

/// <summary>
/// `onnx-decoder bench`: greedy prefill + decode of a synthetic prompt, repeated; reports the
/// median of each figure over the runs after one warm-up run. EOS does not end a run (the next
/// most likely token is taken), so every run decodes the same number of tokens.
/// </summary>
public static class Benchmark
{
    public static JsonObject Run(string modelFolder, int promptTokens, int genTokens, int runs, ExecutionProviderOptions providers)
    {
        if (promptTokens < 1 || genTokens < 2 || runs < 1) throw new ArgumentException("bench needs --prompt-tokens >= 1, --gen-tokens >= 2 and --runs >= 1");
        var folder = ModelFolder.Open(modelFolder);
        int maxLength = promptTokens + genTokens;
        if (maxLength > folder.ContextLength) throw new ArgumentException($"--prompt-tokens + --gen-tokens ({maxLength}) exceed the model's context length ({folder.ContextLength})");
        using var session = new DecoderSession(modelFolder, new DecoderSessionOptions { Providers = providers, MaxLength = maxLength });

        var prompt = new long[promptTokens];
        prompt[0] = folder.BosTokenId;
        for (int i = 1; i < promptTokens; i++)
        {
            long id = 3 + (i * 131L) % (folder.VocabSize - 3);
            while (folder.EosTokenIds.Contains((int)id)) id = (id + 1) % folder.VocabSize;
            prompt[i] = id;
        }

        RunOnce(session, prompt, Math.Min(8, genTokens), folder); // warm-up: first-run allocations and kernel selection
        var measurements = Enumerable.Range(0, runs).Select(_ => RunOnce(session, prompt, genTokens, folder)).ToList();
        long peakRss = PeakRssBytes();

        var stepAt = new JsonObject();
        foreach (int position in new[] { 16, 128, 480, 1000 })
        {
            var values = measurements.Select(m => m.StepMsAt(position)).Where(v => v is not null).Select(v => v!.Value).ToList();
            if (values.Count > 0) stepAt[position.ToString(CultureInfo.InvariantCulture)] = Math.Round(Median(values), 4);
        }
        return new JsonObject
        {
            ["model"] = Path.GetFullPath(modelFolder),
            ["provider"] = ExecutionProviders.Name(session.Provider),
            ["kv_cache"] = folder.PastPresentShareBuffer ? "shared past/present buffer" : "separate past/present buffers",
            ["prompt_tokens"] = promptTokens,
            ["gen_tokens"] = genTokens,
            ["runs"] = runs,
            ["prefill_tokens_per_s"] = Math.Round(Median(measurements.Select(m => m.PrefillTokensPerSecond)), 1),
            ["decode_tokens_per_s"] = Math.Round(Median(measurements.Select(m => m.DecodeTokensPerSecond)), 1),
            ["ttft_ms"] = Math.Round(Median(measurements.Select(m => m.TtftMs)), 3),
            ["peak_rss_mb"] = Math.Round(peakRss / 1048576.0, 1),
            ["managed_bytes_per_token"] = Math.Round(Median(measurements.Select(m => m.ManagedBytesPerToken)), 1),
            ["step_ms_at_position"] = stepAt,
        };
    }

    public static string Describe(JsonObject r) =>
        $"{r["model"]} on {r["provider"]} ({r["kv_cache"]}), {r["prompt_tokens"]} prompt + {r["gen_tokens"]} generated tokens, median of {r["runs"]} runs:\n" +
        $"  prefill  {r["prefill_tokens_per_s"]} tok/s\n  decode   {r["decode_tokens_per_s"]} tok/s\n  TTFT     {r["ttft_ms"]} ms\n" +
        $"  peak RSS {r["peak_rss_mb"]} MiB\n  managed  {r["managed_bytes_per_token"]} bytes allocated per decoded token\n" +
        $"  step ms at position {r["step_ms_at_position"]!.ToJsonString()}";

    private sealed record Measurement(double PrefillTokensPerSecond, double DecodeTokensPerSecond, double TtftMs, double ManagedBytesPerToken, int FirstStepPosition, double[] StepMs)
    {
        /// <summary>Median step time over positions p-2..p+2 (null when the run did not reach p).</summary>
        public double? StepMsAt(int position)
        {
            var window = Enumerable.Range(position - 2, 5).Select(p => p - FirstStepPosition).Where(i => i >= 0 && i < StepMs.Length).Select(i => StepMs[i]).ToList();
            return window.Count == 5 ? Median(window) : null;
        }
    }

    private static Measurement RunOnce(DecoderSession session, long[] prompt, int genTokens, ModelFolder folder)
    {
        session.Reset();
        var clock = Stopwatch.StartNew();
        var logits = session.Append(prompt, prompt.Length);
        double prefillMs = clock.Elapsed.TotalMilliseconds;
        var step = new long[1];
        step[0] = NextToken(logits, folder);
        double ttftMs = clock.Elapsed.TotalMilliseconds;
        int firstStepPosition = session.Length;
        var stepMs = new double[genTokens - 1];
        long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        long decodeStart = Stopwatch.GetTimestamp();
        for (int i = 0; i < genTokens - 1; i++)
        {
            long start = Stopwatch.GetTimestamp();
            logits = session.Step(step);
            stepMs[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            step[0] = NextToken(logits, folder);
        }
        double decodeMs = Stopwatch.GetElapsedTime(decodeStart).TotalMilliseconds;
        long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
        return new Measurement(prompt.Length / (prefillMs / 1000), (genTokens - 1) / (decodeMs / 1000), ttftMs, (double)allocated / (genTokens - 1), firstStepPosition, stepMs);
    }

    private static long NextToken(ReadOnlySpan<float> logits, ModelFolder folder)
    {
        int best = Sampler.ArgMax(logits);
        if (!folder.EosTokenIds.Contains(best)) return best;
        int second = best == 0 ? 1 : 0;
        for (int i = 0; i < logits.Length; i++)
            if (i != best && !folder.EosTokenIds.Contains(i) && logits[i] > logits[second]) second = i;
        return second;
    }

    private static long PeakRssBytes()
    {
        // VmHWM is the peak resident set; Process.PeakWorkingSet64 reads the same on Linux.
        if (File.Exists("/proc/self/status"))
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        return Process.GetCurrentProcess().PeakWorkingSet64;
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
