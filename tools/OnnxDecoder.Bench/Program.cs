using System.Diagnostics;
using OnnxDecoder.Bench;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;
using OrtGenAI = Microsoft.ML.OnnxRuntimeGenAI;

// Side-by-side benchmarks. Verbs:
//   peers    --checkpoint llama2.c.bin|PRESET [--tokenizer tok.bin] [--work DIR] [--prompt-tokens 128] [--gen-tokens 128]
//            [--runs 5] [--threads 2] [--precisions fp32,int8,int4] [--kl-tokens ids.json]
//            ours, onnxruntime-genai and llama.cpp (LLamaSharp) on the same weights, with KL divergences
//   kernels  --checkpoint ... [--work DIR] [--runs 3] [--threads 2] [--only ID,ID]: int4/int8 candidate forms, speed and KL
//   overhead --model MODEL_DIR [--steps 256] [--threads 1] [--runs 3]: host time per decode step beyond ONNX Runtime's run, ours and genai's
//   options  --model MODEL_DIR [--threads 1] [--runs 9] [--only NAME,NAME]: our decode step under ONNX Runtime session option sets
//   batch    --model MODEL_DIR [--concurrent 1,8] [--prompt-tokens 64] [--gen-tokens 64] [--runs 3] [--threads 2] [--budget N]
//            [--profile PREFIX]: continuous batching, aggregate decode, ms per step, TTFT of requests arriving at once
//   MODEL_DIR [prompt_tokens=128] [gen_tokens=128] [runs=5] [threads=2]: ours against onnxruntime-genai on one exported folder,
//            both at the given intra-op thread count
// llama.cpp logs every load step to stderr; keep its warnings and errors only. Set before any native call.
LLama.Native.NativeLibraryConfig.All.WithLogCallback((level, message) =>
{
    if (level is LLama.Native.LLamaLogLevel.Warning or LLama.Native.LLamaLogLevel.Error) Console.Error.Write(message);
});
try
{
    if (args.Length == 0)
    {
        Console.Error.WriteLine("usage: OnnxDecoder.Bench peers|kernels|overhead|options|batch --flag value ... | MODEL_DIR [prompt_tokens] [gen_tokens] [runs] [threads]");
        return 2;
    }
    switch (args[0])
    {
        case "peers":
        {
            var a = new Arguments(args.Skip(1));
            return PeerBenchmark.Run(a);
        }
        case "kernels":
            return KernelBenchmark.Run(new Arguments(args.Skip(1)));
        case "options":
            return OptionScan.Run(new Arguments(args.Skip(1)));
        case "overhead":
            return StepOverhead.Run(new Arguments(args.Skip(1)));
        case "batch":
            return BatchScaling.Run(new Arguments(args.Skip(1)));
        default:
            return OursAgainstGenAi(args);
    }
}
catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or OnnxDecoder.Onnx.ModelFormatException)
{
    Console.Error.WriteLine($"OnnxDecoder.Bench: {e.Message}");
    return 1;
}

// onnxruntime-genai vs OnnxDecoder on one model folder, greedy, batch 1, both at the same intra-op thread
// count (ours through DecoderSessionOptions, genai through a config overlay), both on ONNX Runtime's default
// session options otherwise; runs alternate (and which goes first alternates each round) so that machine
// noise hits both alike. Reported: median tok/s, the median of per-round ratios, and the median step time
// over every timed step of every run (robust to a burst of load in one run).
static int OursAgainstGenAi(string[] args)
{
    string folder = args[0];
    int promptTokens = args.Length > 1 ? int.Parse(args[1]) : 128;
    int genTokens = args.Length > 2 ? int.Parse(args[2]) : 128;
    int runs = args.Length > 3 ? int.Parse(args[3]) : 5;
    int threads = args.Length > 4 ? int.Parse(args[4]) : 2;
    if (promptTokens < 1 || genTokens < 2 || runs < 1 || threads < 1)
        throw new ArgumentException("MODEL_DIR [prompt_tokens >= 1] [gen_tokens >= 2] [runs >= 1] [threads >= 1]");

    var config = ModelFolder.Open(folder);
    var prompt = PeerBenchmark.BenchPrompt(config.BosTokenId, config.VocabSize, promptTokens);
    int maxLength = promptTokens + genTokens;
    if (maxLength > config.ContextLength) throw new ArgumentException($"{promptTokens} + {genTokens} tokens exceed the export's {config.ContextLength}");

    var oursOptions = new DecoderSessionOptions { MaxLength = maxLength, Providers = new ExecutionProviderOptions { IntraOpThreads = threads } };
    using var ours = new DecoderSession(folder, oursOptions);
    // Ours again over the graph as exported (GQA lengths computed from attention_mask, as genai runs it, and no fused ops):
    // what the runtime's form of the graph adds, measured in the same rounds.
    using var oursExported = new DecoderSession(folder,
        oursOptions with { Providers = oursOptions.Providers with { DirectGqaLengths = false, NativeKernels = false } });
    using var genaiConfig = new OrtGenAI.Config(folder);
    genaiConfig.Overlay("{\"model\": {\"decoder\": {\"session_options\": {\"intra_op_num_threads\": " + threads + "}}}}");
    using var model = new OrtGenAI.Model(genaiConfig);

    // Both decode exactly genTokens tokens, the first from the prefill's logits and genTokens - 1 in timed
    // steps: EOS never ends a run early (ours: next-best token; GenAI: min_length = max_length).
    var oursSteps = new List<double>();
    var exportedSteps = new List<double>();
    var theirSteps = new List<double>();

    double Ours(DecoderSession session, List<double>? steps)
    {
        session.Reset();
        var promptIds = prompt.Select(i => (long)i).ToArray();
        var logits = session.Append(promptIds, promptIds.Length);
        var step = new long[1];
        var clock = Stopwatch.StartNew();
        for (int i = 1; i < genTokens; i++)
        {
            long start = Stopwatch.GetTimestamp();
            int next = Sampler.ArgMax(logits);
            if (config.EosTokenIds.Contains(next)) next = (next + 1) % config.VocabSize;
            step[0] = next;
            logits = session.Step(step);
            steps?.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
        }
        return (genTokens - 1) / clock.Elapsed.TotalSeconds;
    }

    // genai greedy over exactly genTokens tokens (min_length = max_length), the prompt appended and the first
    // token taken from the prefill's logits (no run).
    (OrtGenAI.GeneratorParams, OrtGenAI.Generator) StartGenAi()
    {
        var parameters = new OrtGenAI.GeneratorParams(model);
        parameters.SetSearchOption("max_length", maxLength);
        parameters.SetSearchOption("min_length", maxLength);
        parameters.SetSearchOption("do_sample", false);
        var generator = new OrtGenAI.Generator(model, parameters);
        generator.AppendTokens(prompt);
        generator.GenerateNextToken();
        return (parameters, generator);
    }

    double Theirs(bool keep)
    {
        var (parameters, generator) = StartGenAi();
        using var ownedParameters = parameters;
        using var ownedGenerator = generator;
        var clock = Stopwatch.StartNew();
        int steps = 0;
        while (!generator.IsDone())
        {
            long start = Stopwatch.GetTimestamp();
            generator.GenerateNextToken();
            if (keep) theirSteps.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
            steps++;
        }
        if (steps != genTokens - 1) throw new InvalidOperationException($"onnxruntime-genai decoded {steps} steps, ours {genTokens - 1}");
        return steps / clock.Elapsed.TotalSeconds;
    }

    // Lockstep: one step of ours, then one of genai at the same position, so that a burst of machine load
    // hits both alike; the paired ratio of each position's two step times is the sharpest comparison.
    var lockstep = new List<double>();
    void Lockstep()
    {
        ours.Reset();
        var promptIds = prompt.Select(i => (long)i).ToArray();
        var logits = ours.Append(promptIds, promptIds.Length);
        var (parameters, generator) = StartGenAi();
        using var ownedParameters = parameters;
        using var ownedGenerator = generator;
        var step = new long[1];
        for (int i = 1; i < genTokens; i++)
        {
            double theirUs = 0;
            if (i % 2 == 0) theirUs = TheirStep(generator); // who goes first alternates by position
            long start = Stopwatch.GetTimestamp();
            int next = Sampler.ArgMax(logits);
            if (config.EosTokenIds.Contains(next)) next = (next + 1) % config.VocabSize;
            step[0] = next;
            logits = ours.Step(step);
            double oursUs = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
            if (i % 2 == 1) theirUs = TheirStep(generator);
            lockstep.Add(theirUs / oursUs);
        }
    }

    static double TheirStep(OrtGenAI.Generator generator)
    {
        long start = Stopwatch.GetTimestamp();
        generator.GenerateNextToken();
        return Stopwatch.GetElapsedTime(start).TotalMicroseconds;
    }

    Ours(ours, null); Ours(oursExported, null); Theirs(false); // warm-up: first-run allocations and per-shape plans
    var oursRates = new List<double>();
    var exportedRates = new List<double>();
    var theirRates = new List<double>();
    for (int r = 0; r < runs; r++)
    {
        if (r % 2 == 0) { oursRates.Add(Ours(ours, oursSteps)); theirRates.Add(Theirs(true)); exportedRates.Add(Ours(oursExported, exportedSteps)); }
        else { exportedRates.Add(Ours(oursExported, exportedSteps)); theirRates.Add(Theirs(true)); oursRates.Add(Ours(ours, oursSteps)); }
        Lockstep();
    }
    var median = PeerBenchmark.Median;
    Console.WriteLine($"{Path.GetFullPath(folder)}: {promptTokens} prompt + {genTokens} generated tokens ({genTokens - 1} timed steps), batch 1, greedy, " +
        $"{threads} intra-op thread(s) each, {runs} alternating runs, load average {PeerBenchmark.LoadAverage()}");
    void Row(string name, List<double> rates, List<double> steps) => Console.WriteLine(
        $"  {name,-17} decode {median(rates),10:F1} tok/s   step median {median(steps),8:F1} us   runs: {string.Join(", ", rates.Select(x => x.ToString("F0")))}");
    Row("onnxdecoder", oursRates, oursSteps);
    Row("ours, as exported", exportedRates, exportedSteps);
    Row("onnxruntime-genai", theirRates, theirSteps);
    Console.WriteLine($"  ours as exported / genai: {median(Enumerable.Range(0, runs).Select(r => exportedRates[r] / theirRates[r])):F2} (median of per-run ratios); " +
        $"ours / ours as exported {median(Enumerable.Range(0, runs).Select(r => oursRates[r] / exportedRates[r])):F2}");
    Console.WriteLine($"  ratio ours / genai: {median(Enumerable.Range(0, runs).Select(r => oursRates[r] / theirRates[r])):F2} (median of per-run ratios); " +
        $"by median step time {median(theirSteps) / median(oursSteps):F2}; lockstep (median of per-position genai/ours step time) {median(lockstep):F2}");
    return 0;
}
