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
//   overhead --model MODEL_DIR [--steps 256] [--threads 1]: our host time per decode step beyond ONNX Runtime's run
//   MODEL_DIR [prompt_tokens=128] [gen_tokens=128] [runs=5]: ours against onnxruntime-genai on one exported folder
// llama.cpp logs every load step to stderr; keep its warnings and errors only. Set before any native call.
LLama.Native.NativeLibraryConfig.All.WithLogCallback((level, message) =>
{
    if (level is LLama.Native.LLamaLogLevel.Warning or LLama.Native.LLamaLogLevel.Error) Console.Error.Write(message);
});
try
{
    if (args.Length == 0)
    {
        Console.Error.WriteLine("usage: OnnxDecoder.Bench peers|kernels|overhead --flag value ... | MODEL_DIR [prompt_tokens] [gen_tokens] [runs]");
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
        case "overhead":
            return StepOverhead.Run(new Arguments(args.Skip(1)));
        default:
            return OursAgainstGenAi(args);
    }
}
catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or OnnxDecoder.Onnx.ModelFormatException)
{
    Console.Error.WriteLine($"OnnxDecoder.Bench: {e.Message}");
    return 1;
}

// onnxruntime-genai vs OnnxDecoder on one model folder, greedy, batch 1, runs alternating so that
// machine noise hits both alike.
static int OursAgainstGenAi(string[] args)
{
        string folder = args[0];
        int promptTokens = args.Length > 1 ? int.Parse(args[1]) : 128;
        int genTokens = args.Length > 2 ? int.Parse(args[2]) : 128;
        int runs = args.Length > 3 ? int.Parse(args[3]) : 5;

        var config = ModelFolder.Open(folder);
        var prompt = new int[promptTokens];
        prompt[0] = config.BosTokenId;
        for (int i = 1; i < promptTokens; i++) prompt[i] = 3 + (int)((i * 131L) % (config.VocabSize - 3));
        int maxLength = promptTokens + genTokens;
        
        using var ours = new DecoderSession(folder, new DecoderSessionOptions { MaxLength = maxLength });
        using var model = new OrtGenAI.Model(folder);
        
        // Both decode exactly genTokens tokens: EOS is never allowed to end a run early (ours: next-best
        // token; GenAI: min_length = max_length).
        // Step times by position (the position of the token a step feeds), per runtime, over all runs.
        var oursSteps = new Dictionary<int, List<double>>();
        var theirSteps = new Dictionary<int, List<double>>();
        void Record(Dictionary<int, List<double>> steps, int position, double ms)
        {
            if (!steps.TryGetValue(position, out var list)) steps[position] = list = [];
            list.Add(ms);
        }
        
        double Ours()
        {
            ours.Reset();
            var promptIds = prompt.Select(i => (long)i).ToArray();
            var logits = ours.Append(promptIds, promptIds.Length);
            var step = new long[1];
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < genTokens; i++)
            {
                int next = Sampler.ArgMax(logits);
                if (config.EosTokenIds.Contains(next)) next = (next + 1) % config.VocabSize;
                step[0] = next;
                if (i < genTokens - 1)
                {
                    long start = Stopwatch.GetTimestamp();
                    int position = ours.Length;
                    logits = ours.Step(step);
                    Record(oursSteps, position, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                }
            }
            return (genTokens - 1) / clock.Elapsed.TotalSeconds;
        }
        
        double Theirs()
        {
            using var parameters = new OrtGenAI.GeneratorParams(model);
            parameters.SetSearchOption("max_length", maxLength);
            parameters.SetSearchOption("min_length", maxLength);
            parameters.SetSearchOption("do_sample", false);
            using var generator = new OrtGenAI.Generator(model, parameters);
            generator.AppendTokens(prompt);
            generator.GenerateNextToken(); // the first token comes from the prefill
            var clock = Stopwatch.StartNew();
            int steps = 0;
            while (!generator.IsDone())
            {
                long start = Stopwatch.GetTimestamp();
                generator.GenerateNextToken();
                Record(theirSteps, promptTokens + steps, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                steps++;
            }
            return steps / clock.Elapsed.TotalSeconds;
        }
        
        Ours(); Theirs(); // warm-up
        oursSteps.Clear();
        theirSteps.Clear();
        var oursRates = new List<double>();
        var theirRates = new List<double>();
        for (int r = 0; r < runs; r++)
        {
            oursRates.Add(Ours());
            theirRates.Add(Theirs());
        }
        static double Median(List<double> values)
        {
            var sorted = values.Order().ToArray();
            return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
        }
        double a = Median(oursRates), b = Median(theirRates);
        Console.WriteLine($"{Path.GetFullPath(folder)}: {promptTokens} prompt + {genTokens} generated tokens, batch 1, greedy, median of {runs} alternating runs");
        Console.WriteLine($"  onnxdecoder       decode {a,10:F1} tok/s   runs: {string.Join(", ", oursRates.Select(x => x.ToString("F0")))}");
        Console.WriteLine($"  onnxruntime-genai decode {b,10:F1} tok/s   runs: {string.Join(", ", theirRates.Select(x => x.ToString("F0")))}");
        Console.WriteLine($"  ratio ours / genai: {a / b:F2}");
        // Median step time over positions p-2..p+2, where a run reached them.
        string At(Dictionary<int, List<double>> steps, int p)
        {
            var window = Enumerable.Range(p - 2, 5).Where(steps.ContainsKey).SelectMany(q => steps[q]).ToList();
            return window.Count == 0 ? "-" : Median(window).ToString("F4");
        }
        foreach (int p in new[] { 16, 128, 480, 1000 })
            if (p >= promptTokens + 2 && p < maxLength - 2)
                Console.WriteLine($"  step ms at position {p,4}: ours {At(oursSteps, p)}, genai {At(theirSteps, p)}");return 0;
}
