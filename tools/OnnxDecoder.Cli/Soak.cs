using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Cli;

/// <summary>
/// `onnx-decoder soak`: many generations in one process, to show that nothing leaks. After a
/// warm-up it records the managed heap (after a full collection) and the resident set, runs the
/// generations (sampled, alternating prompts; the session is reopened every few hundred), records
/// them again, disposes everything and reports how many OrtValues the runtime created and disposed.
/// </summary>
public static class Soak
{
    public static JsonObject Run(string modelFolder, int generations, int tokens, int warmup, int reopenEvery, bool shareThreadPool = false)
    {
        var sessionOptions = new DecoderSessionOptions { Providers = new ExecutionProviderOptions { ShareThreadPool = shareThreadPool } };
        long liveAtStart = OrtValueLedger.Live;
        string[] prompts = ["Once upon a time", "The little dog", "One day, Lily", "Tom and his friend went to the park"];
        DecoderSession? session = null;
        Generator? generator = null;
        TextTokenizer? tokenizer = null;
        int tokensOut = 0;
        void Generation(int i)
        {
            if (session is null || (reopenEvery > 0 && i % reopenEvery == 0))
            {
                session?.Dispose();
                session = new DecoderSession(modelFolder, sessionOptions);
                tokenizer ??= TextTokenizer.Load(session.Folder.Directory, session.Folder.BosTokenId);
                generator = new Generator(session, tokenizer);
            }
            var options = new GenerationOptions { MaxNewTokens = tokens, Sampling = new SamplingOptions { Temperature = 0.8f, TopP = 0.9f, Seed = i } };
            tokensOut += generator!.Generate(prompts[i % prompts.Length], options).TokenIds.Length;
        }

        for (int i = 0; i < warmup; i++) Generation(i);
        long managedBefore = ManagedHeapBytes();
        long rssBefore = ResidentBytes();
        var clock = Stopwatch.StartNew();
        tokensOut = 0;
        bool trace = Environment.GetEnvironmentVariable("ONNXDECODER_SOAK_TRACE") is not null;
        for (int i = warmup; i < warmup + generations; i++)
        {
            Generation(i);
            if (trace && (i - warmup) % 200 == 0)
                Console.Error.WriteLine($"generation {i}: rss {ResidentBytes() / 1048576.0:F1} MiB, threads {Process.GetCurrentProcess().Threads.Count}, gc heap {GC.GetGCMemoryInfo().HeapSizeBytes / 1048576.0:F1} MiB, committed {GC.GetGCMemoryInfo().TotalCommittedBytes / 1048576.0:F1} MiB");
        }
        double seconds = clock.Elapsed.TotalSeconds;
        long managedAfter = ManagedHeapBytes();
        long rssAfter = ResidentBytes();
        long liveWhileOpen = OrtValueLedger.Live - liveAtStart;
        session?.Dispose();
        return new JsonObject
        {
            ["generations"] = generations,
            ["shared_thread_pool"] = shareThreadPool,
            ["warmup_generations"] = warmup,
            ["tokens_generated"] = tokensOut,
            ["seconds"] = Math.Round(seconds, 2),
            ["managed_bytes_before"] = managedBefore,
            ["managed_bytes_after"] = managedAfter,
            ["managed_growth_percent"] = Math.Round(100.0 * (managedAfter - managedBefore) / managedBefore, 2),
            ["rss_bytes_before"] = rssBefore,
            ["rss_bytes_after"] = rssAfter,
            ["rss_growth_percent"] = Math.Round(100.0 * (rssAfter - rssBefore) / rssBefore, 2),
            ["ortvalues_created"] = OrtValueLedger.Created,
            ["ortvalues_disposed"] = OrtValueLedger.Disposed,
            ["ortvalues_live_before_dispose"] = liveWhileOpen,
            ["ortvalues_live_after_dispose"] = OrtValueLedger.Live - liveAtStart,
        };
    }

    /// <summary>Live managed bytes after full, compacting collections (GC.GetTotalMemory read below zero here on .NET 10).</summary>
    private static long ManagedHeapBytes()
    {
        for (int i = 0; i < 2; i++)
        {
            System.Runtime.GCSettings.LargeObjectHeapCompactionMode = System.Runtime.GCLargeObjectHeapCompactionMode.CompactOnce;
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
        }
        // Live objects after the last full collection, generation by generation (HeapSizeBytes also
        // counts free space inside regions, which moves with fragmentation, not with what we keep).
        return GC.GetGCMemoryInfo(GCKind.FullBlocking).GenerationInfo.ToArray().Sum(g => g.SizeAfterBytes - g.FragmentationAfterBytes);
    }

    private static long ResidentBytes() => ProcessMemory.StatusBytes("VmRSS:") ?? Process.GetCurrentProcess().WorkingSet64;
}
