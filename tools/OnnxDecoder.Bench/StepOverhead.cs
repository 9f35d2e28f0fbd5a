using System.Diagnostics;
using System.Text.Json;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;
using OrtGenAI = Microsoft.ML.OnnxRuntimeGenAI;

namespace OnnxDecoder.Bench;

/// <summary>
/// Host time per decode step beyond ONNX Runtime's own run, ours and onnxruntime-genai's on the same
/// folder at the same intra-op thread count, rounds alternating. Two methods:
/// <list type="bullet">
/// <item>Unprofiled (ours only): DecoderSession.Step's wall time minus the wall time of its call into
/// ONNX Runtime (<see cref="DecoderSession.LastRunTime"/>), per step: what our code adds around the call.</item>
/// <item>Profiled (ours and genai): ONNX Runtime's profiler records a "model_run" event (its time inside
/// Run) for every run; a stopwatch records every step around it (ours: DecoderSession.Step; genai:
/// Generator.GenerateNextToken, which also picks the token). Overhead = step wall - that step's model_run.
/// The profiler slows every node, so model_run is not the unprofiled run time; the difference is what the
/// host adds, including the C API's work outside the profiled span.</item>
/// </list>
/// Medians over steps. Our greedy pick (arg-max over the logits, outside Step) is timed on its own. All
/// decode from BOS alone, the same number of steps at the same positions; a first round warms up.
/// </summary>
public static class StepOverhead
{
    public static int Run(Arguments a)
    {
        string folder = a.Required("--model");
        int steps = a.Int("--steps", 256), threads = a.Int("--threads", 1), rounds = a.Int("--runs", 3);
        a.ThrowIfUnread();
        var config = ModelFolder.Open(folder);
        steps = Math.Min(steps, config.ContextLength - 2);
        string profileDir = Path.Combine(Path.GetTempPath(), $"onnxdecoder-overhead-{Environment.ProcessId}");
        Directory.CreateDirectory(Path.Combine(profileDir, "ours"));
        Directory.CreateDirectory(Path.Combine(profileDir, "genai"));
        try
        {
            var ours = new List<double>();
            var theirs = new List<double>();
            var pickUs = new List<double>();
            var plainStep = new List<double>();
            var plainRun = new List<double>();
            var generatorUs = new List<double>(); // per token: host time around one run
            var tokenizer = OnnxDecoder.Runtime.Tokenization.TextTokenizer.Exists(folder)
                ? OnnxDecoder.Runtime.Tokenization.TextTokenizer.Load(folder, config.BosTokenId) : null;
            using (var plain = new DecoderSession(folder, new DecoderSessionOptions
            {
                MaxLength = steps + 2,
                Providers = new ExecutionProviderOptions { IntraOpThreads = threads },
            }))
            using (var session = new DecoderSession(folder, new DecoderSessionOptions
            {
                MaxLength = steps + 2,
                Providers = new ExecutionProviderOptions { IntraOpThreads = threads, ProfileFilePrefix = Path.Combine(profileDir, "ours", "run") },
            }))
            using (var genaiConfig = new OrtGenAI.Config(folder))
            {
                // The profile prefix as JSON: a string escaped by the serializer, not by hand.
                string prefix = JsonSerializer.Serialize(Path.Combine(profileDir, "genai", "run"));
                genaiConfig.Overlay("{\"model\": {\"decoder\": {\"session_options\": {\"intra_op_num_threads\": " + threads
                    + ", \"enable_profiling\": " + prefix + "}}}}");
                using var genai = new OrtGenAI.Model(genaiConfig);
                for (int r = 0; r <= rounds; r++)
                {
                    // Round 0 warms all up (first-run allocations, per-shape plans); its steps are not kept.
                    var plainRound = OursRound(plain, steps, pickUs, out var plainRuns);
                    var generatorRound = tokenizer is null ? [] : GeneratorRound(plain, tokenizer, steps);
                    var oursRound = OursRound(session, steps, pickUs, out _);
                    var theirRound = GenAiRound(genai, config.BosTokenId, steps);
                    if (r == 0) { pickUs.Clear(); continue; }
                    plainStep.AddRange(plainRound);
                    generatorUs.AddRange(generatorRound);
                    plainRun.AddRange(plainRuns);
                    ours.AddRange(oursRound);
                    theirs.AddRange(theirRound);
                }
            }
            // The profiles are written when the sessions are disposed.
            var oursPerStep = PerStep(Path.Combine(profileDir, "ours"), ours, rounds, steps, out var oursRuns);
            var theirPerStep = PerStep(Path.Combine(profileDir, "genai"), theirs, rounds, steps, out var theirRuns);
            Console.WriteLine($"{Path.GetFullPath(folder)}: {rounds} x {steps} decode steps each, {threads} intra-op thread(s), rounds alternating, " +
                $"load average {PeerBenchmark.LoadAverage()}");
            var plainPerStep = plainStep.Zip(plainRun, (s, m) => s - m).ToList();
            Console.WriteLine("                                   step wall us   run us   host overhead us (median, p90)");
            void Row(string name, List<double> wall, List<double> run, List<double> host, string runIs) => Console.WriteLine(
                $"  {name,-30} {PeerBenchmark.Median(wall),12:F1} {PeerBenchmark.Median(run),8:F1}   " +
                $"{PeerBenchmark.Median(host),8:F1} {Percentile(host, 0.9),8:F1}   (run: {runIs})");
            Row("onnxdecoder, unprofiled", plainStep, plainRun, plainPerStep, "the RunWithBinding call");
            Row("onnxdecoder, profiled", ours, oursRuns, oursPerStep, "model_run");
            Row("onnxruntime-genai, profiled", theirs, theirRuns, theirPerStep, "model_run");
            Console.WriteLine($"  our greedy pick (arg-max, outside Step): median {PeerBenchmark.Median(pickUs):F1} us (genai's is inside its step)");
            Console.WriteLine(tokenizer is null ? "  Generator: the folder has no tokenizer files, not measured"
                : $"  Generator (greedy, text streamed to a callback): host time per token around its run " +
                  $"{PeerBenchmark.Median(generatorUs):F1} us median, p90 {Percentile(generatorUs, 0.9):F1} us");
            return 0;
        }
        finally
        {
            Directory.Delete(profileDir, recursive: true);
        }
    }

    /// <summary>One round of ours: BOS, then <paramref name="steps"/> timed steps (us each, and each one's run in <paramref name="runUs"/>).</summary>
    private static List<double> OursRound(DecoderSession session, int steps, List<double> pickUs, out List<double> runUs)
    {
        var stepUs = new List<double>(steps);
        runUs = new List<double>(steps);
        session.Reset();
        var logits = session.Append([session.Folder.BosTokenId], 1);
        var next = new long[1];
        for (int i = 0; i < steps; i++)
        {
            long start = Stopwatch.GetTimestamp();
            int best = Sampler.ArgMax(logits);
            pickUs.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
            next[0] = session.Folder.EosTokenIds.Contains(best) ? (best + 1) % session.VocabSize : best;
            start = Stopwatch.GetTimestamp();
            logits = session.Step(next);
            stepUs.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
            runUs.Add(session.LastRunTime.TotalMicroseconds);
        }
        return stepUs;
    }

    /// <summary>One greedy Generator run of <paramref name="steps"/> tokens from BOS, text streamed to a callback, no end
    /// token. Per token: the time between consecutive callbacks minus the ONNX Runtime run between them
    /// (<see cref="DecoderSession.LastRunTime"/>): everything the host does for one token (the Step's binding,
    /// sampling, stop rules, detokenization, the callback itself).</summary>
    private static List<double> GeneratorRound(DecoderSession session, OnnxDecoder.Runtime.Tokenization.TextTokenizer tokenizer, int steps)
    {
        var generator = new Generator(session, tokenizer);
        var perToken = new List<double>(steps);
        long previous = 0;
        var result = generator.Generate([session.Folder.BosTokenId], new GenerationOptions { MaxNewTokens = steps, EosTokenIds = [] }, piece =>
        {
            long now = Stopwatch.GetTimestamp();
            if (previous != 0) perToken.Add(Stopwatch.GetElapsedTime(previous, now).TotalMicroseconds - session.LastRunTime.TotalMicroseconds);
            previous = now;
        });
        if (result.TokenIds.Length != steps) throw new InvalidOperationException($"the Generator made {result.TokenIds.Length} of {steps} tokens");
        return perToken;
    }

    /// <summary>One round of genai: BOS (one run), the first token from its logits (no run), then
    /// <paramref name="steps"/> timed calls that each run once; min_length keeps end tokens out.</summary>
    private static List<double> GenAiRound(OrtGenAI.Model model, int bos, int steps)
    {
        var stepUs = new List<double>(steps);
        using var parameters = new OrtGenAI.GeneratorParams(model);
        parameters.SetSearchOption("max_length", steps + 2);
        parameters.SetSearchOption("min_length", steps + 2);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new OrtGenAI.Generator(model, parameters);
        generator.AppendTokens([bos]);
        generator.GenerateNextToken();
        for (int i = 0; i < steps && !generator.IsDone(); i++)
        {
            long start = Stopwatch.GetTimestamp();
            generator.GenerateNextToken();
            stepUs.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
        }
        if (stepUs.Count != steps) throw new InvalidOperationException($"onnxruntime-genai stopped after {stepUs.Count} of {steps} steps");
        return stepUs;
    }

    /// <summary>Pairs the timed steps with their model_run events (each round: warm-up round first, one prefill
    /// run, then one per step) and returns wall - run per step.</summary>
    private static List<double> PerStep(string dir, List<double> stepUs, int rounds, int steps, out List<double> stepRuns)
    {
        string profile = Directory.GetFiles(dir, "*.json").Single();
        var runUs = ModelRuns(profile);
        if (runUs.Count != (rounds + 1) * (steps + 1))
            throw new InvalidDataException($"{profile}: {runUs.Count} model_run events, expected {(rounds + 1) * (steps + 1)} (one per prefill and step)");
        stepRuns = Enumerable.Range(1, rounds).SelectMany(r => runUs.Skip(r * (steps + 1) + 1).Take(steps)).ToList();
        return stepUs.Zip(stepRuns, (s, m) => s - m).ToList();
    }

    /// <summary>Durations (us) of the "model_run" events of an ONNX Runtime profile, in order.</summary>
    internal static List<double> ModelRuns(string path)
    {
        using var stream = File.OpenRead(path);
        using var document = JsonDocument.Parse(stream);
        return document.RootElement.EnumerateArray()
            .Where(e => e.TryGetProperty("name", out var name) && name.GetString() == "model_run")
            .OrderBy(e => e.GetProperty("ts").GetDouble())
            .Select(e => e.GetProperty("dur").GetDouble())
            .ToList();
    }

    private static double Percentile(List<double> values, double q)
    {
        var sorted = values.Order().ToArray();
        return sorted[(int)Math.Min(sorted.Length - 1, Math.Round(q * (sorted.Length - 1)))];
    }
}
