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
    /// <summary>Several models measured in one run, alternating run by run so machine noise hits all alike.</summary>
    public static JsonArray RunAlternating(IReadOnlyList<string> modelFolders, int promptTokens, int genTokens, int runs, ExecutionProviderOptions providers)
    {
        var perModel = modelFolders.Select(_ => new List<JsonObject>()).ToList();
        for (int r = 0; r < runs; r++)
            for (int m = 0; m < modelFolders.Count; m++)
                perModel[m].Add(Run(modelFolders[m], promptTokens, genTokens, 1, providers));
        double bandwidth = CopyBandwidthBytesPerSecond();
        var results = new JsonArray();
        for (int m = 0; m < modelFolders.Count; m++)
        {
            double decode = Median(perModel[m].Select(j => j["decode_tokens_per_s"]!.GetValue<double>()));
            long weightBytes = BytesReadPerStep(modelFolders[m]);
            double ceiling = bandwidth / weightBytes;
            results.Add(new JsonObject
            {
                ["model"] = Path.GetFullPath(modelFolders[m]),
                ["decode_tokens_per_s"] = Math.Round(decode, 1),
                ["decode_runs"] = new JsonArray(perModel[m].Select(j => (JsonNode)j["decode_tokens_per_s"]!.GetValue<double>()).ToArray()),
                ["ratio_to_first"] = 0.0,
                ["weight_bytes_read_per_step"] = weightBytes,
                ["copy_bandwidth_gb_per_s"] = Math.Round(bandwidth / 1e9, 2),
                ["bandwidth_ceiling_tokens_per_s"] = Math.Round(ceiling, 1),
                ["fraction_of_ceiling"] = Math.Round(decode / ceiling, 3),
            });
        }
        double first = results[0]!["decode_tokens_per_s"]!.GetValue<double>();
        foreach (var r in results) r!["ratio_to_first"] = Math.Round(r["decode_tokens_per_s"]!.GetValue<double>() / first, 2);
        return results;
    }

    /// <summary>
    /// Memory bandwidth from a large copy: 2 x 512 MiB / best time of 5 copies (each byte is read once
    /// and written once). A decode step reads every weight once, so bandwidth / bytes read per step is
    /// the step-rate ceiling that memory allows.
    /// </summary>
    public static double CopyBandwidthBytesPerSecond()
    {
        const int size = 512 << 20;
        var source = GC.AllocateUninitializedArray<byte>(size);
        var destination = GC.AllocateUninitializedArray<byte>(size);
        Array.Fill(source, (byte)1);
        Array.Fill(destination, (byte)2);
        double best = double.MaxValue;
        for (int i = 0; i < 5; i++)
        {
            long start = Stopwatch.GetTimestamp();
            source.AsSpan().CopyTo(destination);
            best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        return 2.0 * size / best;
    }

    /// <summary>Bytes of initializers a decode step reads: all of them, except tables used only by
    /// Gather (the token embedding, of which a step reads one row).</summary>
    public static long BytesReadPerStep(string modelFolder)
    {
        var folder = ModelFolder.Open(modelFolder);
        using var file = OnnxDecoder.Onnx.OnnxModelFile.Load(folder.ModelPath);
        var graph = file.Model.Graph;
        var consumers = graph.Node.SelectMany(n => n.Input.Select(i => (Input: i, Op: n.OpType))).ToLookup(x => x.Input, x => x.Op);
        long bytes = 0;
        foreach (var tensor in graph.Initializer)
        {
            var ops = consumers[tensor.Name].ToList();
            if (ops.Count > 0 && ops.All(op => op == "Gather")) continue;
            var external = file.ExternalTensors.FirstOrDefault(e => e.TensorName == tensor.Name);
            bytes += external?.Length ?? tensor.RawData.Length;
        }
        return bytes;
    }

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
            ["native_kernels"] = session.Model.NativeKernels.ToString(),
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

    /// <summary>
    /// Continuous batching throughput: for each level in <paramref name="concurrency"/>, that many
    /// requests (prompt <paramref name="promptTokens"/>, exactly <paramref name="genTokens"/> generated,
    /// EOS ignored) go through one <see cref="ContinuousBatcher"/> at once; levels alternate run by
    /// run. Reports the aggregate decode rate (tokens decoded in batched runs over the time in those
    /// runs), end-to-end tokens/s including prefill, and each level's ratio to the first.
    /// </summary>
    public static JsonArray RunConcurrent(string modelFolder, int promptTokens, int genTokens, int runs, int[] concurrency, ExecutionProviderOptions providers)
    {
        if (promptTokens < 1 || genTokens < 2 || runs < 1 || concurrency.Length == 0 || concurrency.Any(c => c < 1 || c > 1024))
            throw new ArgumentException("bench needs --prompt-tokens >= 1, --gen-tokens >= 2, --runs >= 1 and --concurrent levels between 1 and 1024");
        using var model = new DecoderModel(modelFolder, providers);
        var folder = model.Folder;
        int maxLength = promptTokens + genTokens;
        if (maxLength > folder.ContextLength) throw new ArgumentException($"--prompt-tokens + --gen-tokens ({maxLength}) exceed the model's context length ({folder.ContextLength})");
        var tokenizer = Runtime.Tokenization.TextTokenizer.Load(folder.Directory, folder.BosTokenId);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = concurrency.Max(), MaxLength = maxLength, MaxQueueLength = 0 });
        var options = new GenerationOptions { MaxNewTokens = genTokens, EosTokenIds = [] };
        int[] Prompt(int request)
        {
            var ids = new int[promptTokens];
            ids[0] = folder.BosTokenId;
            for (int i = 1; i < promptTokens; i++)
            {
                int id = 3 + (int)((i * 131L + request * 17L) % (folder.VocabSize - 3));
                while (folder.EosTokenIds.Contains(id)) id = (id + 1) % folder.VocabSize;
                ids[i] = id;
            }
            return ids;
        }
        (double Decode, double EndToEnd) Once(int level)
        {
            long rowSteps = batcher.RowSteps;
            var decodeTime = batcher.DecodeTime;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var sequences = Enumerable.Range(0, level).Select(i => batcher.Submit(Prompt(i), options)).ToList();
            Task.WaitAll(sequences.Select(s => s.Completion).ToArray());
            clock.Stop();
            foreach (var sequence in sequences) sequence.Dispose();
            double decodeSeconds = (batcher.DecodeTime - decodeTime).TotalSeconds;
            return ((batcher.RowSteps - rowSteps) / decodeSeconds, level * genTokens / clock.Elapsed.TotalSeconds);
        }
        foreach (int level in concurrency) Once(level); // warm-up: every batch size once
        var measured = concurrency.ToDictionary(c => c, _ => new List<(double Decode, double EndToEnd)>());
        for (int run = 0; run < runs; run++)
            foreach (int level in concurrency) measured[level].Add(Once(level));
        var result = new JsonArray();
        double first = Median(measured[concurrency[0]].Select(m => m.Decode));
        foreach (int level in concurrency)
        {
            double decode = Median(measured[level].Select(m => m.Decode));
            result.Add(new JsonObject
            {
                ["model"] = Path.GetFullPath(modelFolder),
                ["provider"] = ExecutionProviders.Name(model.Provider),
                ["concurrent_sequences"] = level,
                ["prompt_tokens"] = promptTokens,
                ["gen_tokens"] = genTokens,
                ["runs"] = runs,
                ["aggregate_decode_tokens_per_s"] = Math.Round(decode, 1),
                ["end_to_end_tokens_per_s"] = Math.Round(Median(measured[level].Select(m => m.EndToEnd)), 1),
                ["ratio_to_first"] = Math.Round(decode / first, 2),
            });
        }
        return result;
    }

    public static string Describe(JsonObject r) =>
        $"{r["model"]} on {r["provider"]} ({r["kv_cache"]}), {r["prompt_tokens"]} prompt + {r["gen_tokens"]} generated tokens, median of {r["runs"]} runs:\n" +
        $"  matmul   {r["native_kernels"]}\n" +
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

    /// <summary>Peak resident set (VmHWM); where /proc is missing, the process's peak working set.</summary>
    private static long PeakRssBytes() => ProcessMemory.StatusBytes("VmHWM:") ?? Process.GetCurrentProcess().PeakWorkingSet64;

    internal static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
