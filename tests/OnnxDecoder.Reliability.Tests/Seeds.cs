using System.Buffers.Binary;
using System.Text;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Llama2c;
using OnnxDecoder.Exporters.SafeTensors;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Exporters.Tokenizers;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Reliability.Tests;

/// <summary>Small valid files of every format we parse: the seeds the fuzzer mutates.</summary>
public static class Seeds
{
    // A llama2.c model small enough to parse thousands of times: dim 8, hidden 12, 1 layer, 2 heads, 1 kv head, vocab 16, seq 4.
    private static readonly int[] Header = [8, 12, 1, 2, 1, 16, 4];

    public static byte[] Llama2c(int version)
    {
        var stream = new MemoryStream();
        var writer = new BinaryWriter(stream);
        if (version == 1)
        {
            writer.Write(Llama2cCheckpoint.Version1Magic);
            writer.Write(1);
        }
        foreach (var field in Header) writer.Write(field);
        if (version == 1) writer.Write((byte)1); // shared classifier
        while (version == 1 && stream.Length < 256) writer.Write((byte)0);
        // floats: emb 16x8, norms, q 8x8, k 4x8, v 4x8, o 8x8, ffn norm, w1 12x8, w2 8x12, w3 12x8, final norm (+ v0 rope tables 2 x 4 x 2)
        int floats = 128 + 8 + 64 + 32 + 32 + 64 + 8 + 96 + 96 + 96 + 8 + (version == 0 ? 16 : 0);
        var random = new Random(1);
        for (int i = 0; i < floats; i++) writer.Write((float)(random.NextDouble() - 0.5));
        return stream.ToArray();
    }

    public static byte[] Llama2cTokenizer()
    {
        var stream = new MemoryStream();
        var writer = new BinaryWriter(stream);
        writer.Write(8);
        string[] pieces = ["\n<unk>\n", "\n<s>\n", "\n</s>\n", "a", "b", " ", " a", "ab", "ba", "bb", " ab", "aa", " b", "x", "y", " x"];
        for (int id = 0; id < pieces.Length; id++)
        {
            writer.Write(id < 3 ? 0f : -id);
            var bytes = Encoding.UTF8.GetBytes(pieces[id]);
            writer.Write(bytes.Length);
            writer.Write(bytes);
        }
        return stream.ToArray();
    }

    public static byte[] SafeTensors(string scratch)
    {
        string path = Path.Combine(scratch, "seed.safetensors");
        SafeTensorsWriter.Write(path, [
            ("a", TensorData.From<float>(new float[] { 1, 2, 3, 4 }, 2, 2)),
            ("b", TensorData.From<float>(new float[] { 5, 6 }, 2)),
            ("c", TensorData.From<float>(new float[] { 7, 8, 9 }, 3)),
        ], new Dictionary<string, string> { ["format"] = "pt" });
        return File.ReadAllBytes(path);
    }

    /// <summary>A GGUF with metadata arrays (tokens, scores) and F32, F16 and Q8_0 tensors.</summary>
    public static byte[] Gguf(string scratch)
    {
        string path = Path.Combine(scratch, "seed.gguf");
        byte[] Array(uint type, params byte[][] items) => [.. GgufTestWriter.U32(type), .. GgufTestWriter.U64((ulong)items.Length), .. items.SelectMany(i => i)];
        var values = Enumerable.Range(0, 64).Select(i => i / 10f).ToArray();
        GgufTestWriter.WriteFile(path,
        [
            ("general.architecture", 8, GgufTestWriter.Str("llama")),
            ("general.alignment", 4, GgufTestWriter.U32(32)),
            ("tokenizer.ggml.tokens", 9, Array(8, GgufTestWriter.Str("<unk>"), GgufTestWriter.Str("<s>"), GgufTestWriter.Str("</s>"), GgufTestWriter.Str("▁a"))),
            ("tokenizer.ggml.scores", 9, Array(6, GgufTestWriter.F32(0), GgufTestWriter.F32(0), GgufTestWriter.F32(0), GgufTestWriter.F32(-1))),
        ],
        [
            ("f32", [2, 32], 0u, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray()),
            ("f16", [1, 32], 1u, values.Take(32).SelectMany(v => BitConverter.GetBytes(BitConverter.HalfToUInt16Bits((Half)v))).ToArray()),
            ("q8", [2, 32], 8u, GgufTestWriter.QuantizeQ8(values)),
        ]);
        return File.ReadAllBytes(path);
    }

    /// <summary>A complete tiny llama GGUF (hidden 32) that exports: exercises the name map and config too.</summary>
    public static byte[] GgufLlama(string scratch)
    {
        var config = new DecoderConfig
        {
            ModelType = "llama", HiddenSize = 32, IntermediateSize = 32, NumLayers = 1, NumHeads = 2, NumKvHeads = 1, HeadDim = 16,
            VocabSize = 16, MaxPositions = 16, TieWordEmbeddings = true, BosTokenId = 1, EosTokenIds = [2],
        };
        var weights = InMemoryWeights.Random(Modeling.Families.FamilyRegistry.For(config).ExpectedWeights(config), 3);
        string path = Path.Combine(scratch, "seed-llama.gguf");
        GgufTestWriter.Write(path, config, weights, q8: true);
        return File.ReadAllBytes(path);
    }

    /// <summary>A model.onnx whose weight lies in model.onnx.data.</summary>
    public static (byte[] Model, byte[] Data) Onnx(string scratch)
    {
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, 64);
        var w = b.Initializer("w", TensorData.From<float>(new float[64], 64));
        var c = b.Initializer("c", TensorData.From<float>(new float[4], 4));
        b.Output(b.Op("Add", [x, w]), "y", ElementType.Float, 64);
        b.Output(b.Op("Neg", [c]), "z", ElementType.Float, 4);
        string path = Path.Combine(scratch, "onnx-seed", "model.onnx");
        ModelWriter.Save(b.Build(), path, new ModelWriterOptions { ExternalDataThreshold = 64 });
        return (File.ReadAllBytes(path), File.ReadAllBytes(path + ".data"));
    }

    public static string ConfigJson() => SynthPresets.ToHuggingFaceJson(SynthPresets.Get("mixtral-tiny") with { RopeScaling = new RopeScaling { Type = RopeScalingType.Linear, Factor = 2 } }).ToJsonString();

    public static byte[] GenAiConfig(string scratch)
    {
        string folder = Path.Combine(scratch, "genai-seed");
        Directory.CreateDirectory(folder);
        ModelFolderWriter.WriteGenAiConfig(folder, SynthPresets.Get("llama-tiny"), new ExportOptions { Lowering = Lowering.Ort });
        return File.ReadAllBytes(Path.Combine(folder, "genai_config.json"));
    }

    /// <summary>A 300-token byte-level BPE: tokenizer.json, vocab.json and merges.txt.</summary>
    public static (byte[] TokenizerJson, byte[] Vocab, byte[] Merges) Bpe(string scratch)
    {
        string folder = Path.Combine(scratch, "bpe-seed");
        Directory.CreateDirectory(folder);
        Gpt2Bpe.FirstRanks(299).WriteFiles(folder);
        return (File.ReadAllBytes(Path.Combine(folder, "tokenizer.json")), File.ReadAllBytes(Path.Combine(folder, "vocab.json")), File.ReadAllBytes(Path.Combine(folder, "merges.txt")));
    }

    public static byte[] SentencePiece(string scratch)
    {
        string path = Path.Combine(scratch, "tok.bin");
        File.WriteAllBytes(path, Llama2cTokenizer());
        var stream = new MemoryStream();
        SentencePieceModelWriter.Write(Exporters.Llama2c.Llama2cTokenizer.Read(path, 16), stream);
        return stream.ToArray();
    }

    public static void WriteU32(Span<byte> target, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(target, value);
}
