using System.Diagnostics;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Gguf;
using OnnxDecoder.Exporters.Llama2c;
using OnnxDecoder.Exporters.SafeTensors;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Reliability.Tests;

/// <summary>
/// Mutation fuzzing of every parser of files we did not write: 10,000 seeded, reproducible
/// corruptions each (bit flips, truncations, extreme values in length/count/offset fields, inserted
/// and deleted bytes, JSON character edits). Every case must end in success or in our typed
/// exception (ModelFormatException, ConfigException), never another exception, a crash or a hang,
/// and must not allocate more than the file's size plus a fixed margin. A failing case is reported
/// with its number and mutation, so it can be replayed.
/// </summary>
[Parallelizable(ParallelScope.Children)]
public class FuzzTests
{
    public static int Cases = int.TryParse(Environment.GetEnvironmentVariable("ONNXDECODER_FUZZ_CASES"), out int n) ? n : 10_000;
    private const long AllocationMargin = 16L << 20;
    private static string _scratch = "";

    [OneTimeSetUp]
    public void SetUp()
    {
        // tmpfs when there is one: 10,000 small files per parser.
        string root = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        _scratch = Path.Combine(root, $"onnxdecoder-fuzz-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_scratch);
    }

    [OneTimeTearDown]
    public void TearDown() => Directory.Delete(_scratch, recursive: true);

    private static string Folder(string name)
    {
        string folder = Path.Combine(_scratch, name);
        Directory.CreateDirectory(folder);
        return folder;
    }

    private static void Fuzz(string parser, string path, Func<int, (byte[] Bytes, string How)> mutate, Action parse)
    {
        var failures = new List<string>();
        var clock = Stopwatch.StartNew();
        int typed = 0, accepted = 0;
        for (int n = 0; n < Cases; n++)
        {
            var (bytes, how) = mutate(n);
            File.WriteAllBytes(path, bytes);
            if (Environment.GetEnvironmentVariable("ONNXDECODER_FUZZ_TRACE") is { } trace) File.AppendAllText(trace, $"{parser} case {n} ({how})\n");
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                parse();
                accepted++;
            }
            catch (Exception e) when (e is ModelFormatException or ConfigException)
            {
                typed++;
            }
            catch (Exception e)
            {
                failures.Add($"case {n} ({how}): {e.GetType().Name}: {e.Message}");
            }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (allocated > bytes.Length + AllocationMargin)
                failures.Add($"case {n} ({how}): allocated {allocated:N0} bytes for a {bytes.Length:N0}-byte file");
        }
        TestContext.Out.WriteLine($"{parser}: {Cases} cases in {clock.Elapsed.TotalSeconds:F1} s: {accepted} accepted, {typed} refused with a typed error");
        Assert.That(failures, Is.Empty, $"{parser}: {failures.Count} cases failed; first: {string.Join(" | ", failures.Take(5))}");
        Assert.That(typed, Is.GreaterThan(Cases / 10), "the mutations reach the parser's checks");
    }

    private static void ReadAll(IWeightSource weights)
    {
        foreach (var name in weights.Names) weights.Get(name).ToArray();
    }

    [TestCase(0)]
    [TestCase(1)]
    public void Llama2c_checkpoint(int version)
    {
        var seed = Seeds.Llama2c(version);
        string path = Path.Combine(Folder($"llama2c-v{version}"), "model.bin");
        Fuzz($"llama2.c v{version}", path, n => Mutator.Binary(seed, n, version == 1 ? 256 : 28), () =>
        {
            using var checkpoint = Llama2cCheckpoint.Open(path);
            ReadAll(checkpoint);
        });
    }

    [Test]
    public void Llama2c_tokenizer()
    {
        var seed = Seeds.Llama2cTokenizer();
        string path = Path.Combine(Folder("tokbin"), "tok16.bin");
        Fuzz("tokenizer.bin", path, n => Mutator.Binary(seed, n, 64), () => Llama2cTokenizer.Read(path, 16));
    }

    [Test]
    public void Safetensors()
    {
        var seed = Seeds.SafeTensors(Folder("st-seed"));
        string path = Path.Combine(Folder("st"), "model.safetensors");
        Fuzz("safetensors", path, n => n % 2 == 0 ? Mutator.Binary(seed, n, 16) : Mutator.Text(seed, n), () =>
        {
            using var file = SafeTensorsFile.Open(path);
            foreach (var name in file.Entries.Keys) file.Tensor(name).ToArray();
        });
    }

    [Test]
    public void Gguf()
    {
        var seed = Seeds.Gguf(Folder("gguf-seed"));
        string path = Path.Combine(Folder("gguf"), "model.gguf");
        Fuzz("gguf", path, n => Mutator.Binary(seed, n, 512), () =>
        {
            using var file = GgufFile.Open(path);
            foreach (var name in file.Tensors.Keys) file.Tensor(name).ToArray();
        });
    }

    [Test]
    public void Gguf_llama_checkpoint()
    {
        var seed = Seeds.GgufLlama(Folder("gguf-llama-seed"));
        string path = Path.Combine(Folder("gguf-llama"), "model.gguf");
        Fuzz("gguf llama checkpoint", path, n => Mutator.Binary(seed, n, 1024), () =>
        {
            using var checkpoint = Checkpoint.Open(path);
            WeightMap.Validate(checkpoint.Config, checkpoint.Weights, path);
            ReadAll(checkpoint.Weights);
        });
    }

    [TestCase(false)]
    [TestCase(true)]
    public void Onnx_with_external_data(bool mutateData)
    {
        var (model, data) = Seeds.Onnx(Folder(mutateData ? "onnx-seed-data" : "onnx-seed-model"));
        string folder = Folder(mutateData ? "onnx-data" : "onnx-model");
        string path = Path.Combine(folder, "model.onnx");
        File.WriteAllBytes(path, model);
        File.WriteAllBytes(path + ".data", data);
        Fuzz(mutateData ? "onnx external data" : "onnx model", mutateData ? path + ".data" : path,
            n => Mutator.Binary(mutateData ? data : model, n, 256), () =>
            {
                using var file = OnnxModelFile.Load(path);
                foreach (var tensor in file.Model.Graph.Initializer) file.ReadTensorBytes(tensor);
            });
    }

    [Test]
    public void Hugging_face_config_json()
    {
        var seed = System.Text.Encoding.UTF8.GetBytes(Seeds.ConfigJson());
        string path = Path.Combine(Folder("config"), "config.json");
        Fuzz("config.json", path, n => Mutator.Text(seed, n), () => DecoderConfig.FromHuggingFace(File.ReadAllText(path), path));
    }

    [Test]
    public void Genai_config_json()
    {
        var seed = Seeds.GenAiConfig(Folder("genai-seed-root"));
        string folder = Folder("genai");
        File.WriteAllBytes(Path.Combine(folder, "model.onnx"), [0]);
        Fuzz("genai_config.json", Path.Combine(folder, "genai_config.json"), n => Mutator.Text(seed, n), () => ModelFolder.Open(folder));
    }

    private static void LoadAndUse(string folder)
    {
        var tokenizer = TextTokenizer.Load(folder, bosTokenId: null);
        var ids = tokenizer.Encode("a ab ba x", addBos: false);
        tokenizer.Decode(ids);
    }

    [Test]
    public void Tokenizer_json()
    {
        var (json, _, _) = Seeds.Bpe(Folder("bpe-seed-a"));
        string folder = Folder("tokenizer-json");
        Fuzz("tokenizer.json", Path.Combine(folder, "tokenizer.json"), n => Mutator.Text(json, n), () => LoadAndUse(folder));
    }

    [TestCase("vocab.json")]
    [TestCase("merges.txt")]
    public void Vocab_and_merges(string mutated)
    {
        var (_, vocab, merges) = Seeds.Bpe(Folder($"bpe-seed-{mutated}"));
        string folder = Folder($"bpe-{mutated}");
        File.WriteAllBytes(Path.Combine(folder, "vocab.json"), vocab);
        File.WriteAllBytes(Path.Combine(folder, "merges.txt"), merges);
        Fuzz(mutated, Path.Combine(folder, mutated), n => Mutator.Text(mutated == "vocab.json" ? vocab : merges, n), () => LoadAndUse(folder));
    }

    [Test]
    public void SentencePiece_model()
    {
        var seed = Seeds.SentencePiece(Folder("spm-seed"));
        string folder = Folder("spm");
        Fuzz("tokenizer.model", Path.Combine(folder, "tokenizer.model"), n => Mutator.Binary(seed, n, 64), () => LoadAndUse(folder));
    }
}
