using OnnxDecoder.Exporters.Tokenizers;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.Gguf;

/// <summary>
/// A GGUF llama (dense or mixture of experts) as a checkpoint: config from the llama.* metadata,
/// tensors renamed to Hugging Face Llama/Mixtral names, rotary layout interleaved (llama.cpp's
/// converter stores q and k that way), and the SentencePiece vocabulary from tokenizer.ggml.*.
/// <code>
///   token_embd -> model.embed_tokens        blk.{i}.attn_norm -> input_layernorm     blk.{i}.attn_q/k/v/output -> self_attn.q/k/v/o_proj
///   blk.{i}.ffn_norm -> post_attention_layernorm   blk.{i}.ffn_gate/up/down -> mlp.gate/up/down_proj
///   blk.{i}.ffn_gate_inp -> block_sparse_moe.gate  blk.{i}.ffn_gate/up/down_exps[e] -> experts.{e}.w1/w3/w2
///   output_norm -> model.norm                output -> lm_head (absent: tied)
/// </code>
/// </summary>
public sealed class GgufCheckpoint : Modeling.Quantization.IQuantizedWeightSource
{
    private readonly GgufFile _file;
    private readonly Dictionary<string, Func<ITensorSource>> _tensors = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (string GgufName, int? Expert)> _origins = new(StringComparer.Ordinal);

    /// <summary>
    /// Q4_0 and Q8_0 are symmetric blocks of 32 with one fp16 scale: MatMulNBits 4-bit and 8-bit at
    /// block 32 hold the same numbers. Q4_0 stores element j in the low nibble of byte j and j + 16 in
    /// the high one, where MatMulNBits wants 2i low and 2i + 1 high, so the nibbles are reordered;
    /// Q8_0's signed bytes become unsigned with zero point 128. No value passes through float.
    /// Other block formats (Q4_K, Q6_K) have sub-block scales and mins MatMulNBits cannot express.
    /// </summary>
    public Modeling.Quantization.CarriedWeight? TryCarry(string name, Modeling.Quantization.QuantizationOptions options)
    {
        if (!_origins.TryGetValue(name, out var origin) || !options.Symmetric || options.BlockSize != 32) return null;
        var tensor = _file.Tensors[origin.GgufName];
        bool match = (tensor.Type, options.Bits) is (GgmlType.Q4_0, 4) or (GgmlType.Q8_0, 8);
        if (!match) return null;
        var shape = origin.Expert is null ? tensor.Shape : tensor.Shape[1..];
        if (shape.Length != 2) return null;
        int n = (int)shape[0], k = (int)shape[1];
        return new Modeling.Quantization.CarriedWeight(n, k, () => Carry(tensor, origin.Expert, n, k, options.Bits));
    }

    private Modeling.Quantization.QuantizedWeight Carry(GgufTensor tensor, int? expert, int n, int k, int bits)
    {
        int blocks = k / 32;
        long bytesPerExpert = tensor.ByteLength / (expert is null ? 1 : tensor.Shape[0]);
        var raw = _file.RawBytes(tensor.Offset + (expert ?? 0) * bytesPerExpert, bytesPerExpert);
        int blockBytes = tensor.Type == GgmlType.Q4_0 ? 18 : 34, blob = bits == 4 ? 16 : 32;
        var packed = new byte[(long)n * blocks * blob];
        var scales = new float[n * blocks];
        for (long b = 0; b < (long)n * blocks; b++)
        {
            var block = raw.AsSpan((int)(b * blockBytes), blockBytes);
            scales[b] = (float)BitConverter.UInt16BitsToHalf(System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(block));
            var target = packed.AsSpan((int)(b * blob), blob);
            if (tensor.Type == GgmlType.Q8_0)
                for (int i = 0; i < 32; i++) target[i] = (byte)((sbyte)block[2 + i] + 128);
            else
                for (int i = 0; i < 16; i++)
                {
                    int first = NibbleOfQ4_0(block, 2 * i), second = NibbleOfQ4_0(block, 2 * i + 1);
                    target[i] = (byte)(first | second << 4);
                }
        }
        return new Modeling.Quantization.QuantizedWeight(n, k, bits, 32, packed, scales, null);
    }

    /// <summary>The 4-bit value of element j (0..31) of a Q4_0 block: low nibbles hold 0..15, high nibbles 16..31.</summary>
    private static int NibbleOfQ4_0(ReadOnlySpan<byte> block, int j) => j < 16 ? block[2 + j] & 0xF : block[2 + j - 16] >> 4;

    private GgufCheckpoint(GgufFile file) => _file = file;

    public IReadOnlyCollection<string> Names => _tensors.Keys;
    public ITensorSource Get(string name) => _tensors.TryGetValue(name, out var make) ? make() : throw new KeyNotFoundException($"no tensor '{name}'");

    public static Checkpoint Open(string path)
    {
        var file = GgufFile.Open(path);
        try
        {
            var checkpoint = new GgufCheckpoint(file);
            var config = checkpoint.ReadConfig();
            var dtypes = new Dictionary<string, string>(StringComparer.Ordinal);
            checkpoint.MapNames(config, dtypes);
            return Checkpoint.Create("gguf", config, checkpoint, [file.Path], checkpoint.TokenizerWriter(config.MaxPositions), file, dtypes);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private ModelFormatException Bad(string problem) => new(_file.Path, problem);

    private DecoderConfig ReadConfig()
    {
        string arch = _file.Get<string>("general.architecture") ?? throw Bad("metadata general.architecture is missing");
        if (arch != "llama") throw Bad($"general.architecture '{arch}' is not supported (llama, including llama-architecture mixtures of experts): "
            + "export the model's Hugging Face checkpoint (config.json + *.safetensors) instead");
        int Int(string key, int? fallback = null)
        {
            long? value = _file.Integer($"{arch}.{key}");
            if (value is null) return fallback ?? throw Bad($"metadata {arch}.{key} is missing");
            if (value is < 0 or > int.MaxValue) throw Bad($"metadata {arch}.{key} ({value}) is out of range");
            return (int)value.Value;
        }
        int hidden = Int("embedding_length"), heads = Int("attention.head_count");
        if (heads <= 0 || hidden % heads != 0) throw Bad($"metadata {arch}.embedding_length ({hidden}) must be divisible by {arch}.attention.head_count ({heads})");
        int headDim = hidden / heads;
        int rotaryDim = Int("rope.dimension_count", headDim);
        if (!_file.Tensors.TryGetValue("token_embd.weight", out var embedding)) throw Bad("tensor token_embd.weight is missing");
        int vocab = (int)Math.Min(int.MaxValue, embedding.Shape[0]);
        int experts = Int("expert_count", 0);
        var tokens = _file.Get<object[]>("tokenizer.ggml.tokens");
        if (tokens is not null && tokens.Length != vocab) throw Bad($"tokenizer.ggml.tokens has {tokens.Length} entries but token_embd.weight has {vocab} rows");
        long? bos = _file.Integer("tokenizer.ggml.bos_token_id"), eos = _file.Integer("tokenizer.ggml.eos_token_id");
        return new DecoderConfig
        {
            ModelType = experts > 0 ? "mixtral" : "llama",
            HiddenSize = hidden,
            IntermediateSize = Int("feed_forward_length"),
            NumLayers = Int("block_count"),
            NumHeads = heads,
            NumKvHeads = Int("attention.head_count_kv", heads),
            HeadDim = headDim,
            VocabSize = vocab,
            MaxPositions = Int("context_length"),
            NormEps = _file.Number($"{arch}.attention.layer_norm_rms_epsilon") ?? 1e-5,
            RopeTheta = _file.Number($"{arch}.rope.freq_base") ?? 10000,
            PartialRotaryFactor = (double)rotaryDim / headDim,
            RotaryLayout = RotaryLayout.Interleaved,
            TieWordEmbeddings = !_file.Tensors.ContainsKey("output.weight"),
            NumExperts = experts,
            ExpertsPerToken = experts > 0 ? Int("expert_used_count") : 0,
            BosTokenId = (int)(bos ?? 1),
            EosTokenIds = [(int)(eos ?? 2)],
        }.Validate(_file.Path);
    }

    /// <summary>Renames the file's tensors by the family's GGUF name table; a tensor the table lacks is refused.</summary>
    private void MapNames(DecoderConfig c, Dictionary<string, string> dtypes)
    {
        var known = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (ggufName, hfName, expert) in Modeling.Families.FamilyRegistry.For(c).GgufNames(c))
        {
            known.Add(ggufName);
            if (!_file.Tensors.TryGetValue(ggufName, out var tensor)) continue; // the name check reports what is missing
            if (expert is int e)
            {
                if (tensor.Shape.Length != 3 || tensor.Shape[0] != c.NumExperts)
                    throw Bad($"tensor '{ggufName}' has shape [{string.Join(", ", tensor.Shape)}], expected [{c.NumExperts}, rows, cols]");
                _tensors[hfName] = () => _file.Tensor(ggufName, e);
            }
            else _tensors[hfName] = () => _file.Tensor(ggufName);
            _origins[hfName] = (ggufName, expert);
            dtypes[hfName] = tensor.Type.ToString();
        }
        var unmapped = _file.Tensors.Keys.Order(StringComparer.Ordinal).FirstOrDefault(k => !known.Contains(k));
        if (unmapped is not null) throw Bad($"unexpected tensor '{unmapped}': not part of a llama model this exporter knows");
    }

    /// <summary>tokenizer.ggml.model "llama": a SentencePiece vocabulary (pieces use U+2581 for spaces).</summary>
    private Action<string>? TokenizerWriter(int contextLength)
    {
        string? model = _file.Get<string>("tokenizer.ggml.model");
        var tokens = _file.Get<object[]>("tokenizer.ggml.tokens");
        if (model is null || tokens is null) return null;
        if (model != "llama") throw Bad($"tokenizer.ggml.model '{model}' is not supported yet (llama)");
        var scores = _file.Get<object[]>("tokenizer.ggml.scores");
        var types = _file.Get<object[]>("tokenizer.ggml.token_type");
        if (scores is not null && scores.Length != tokens.Length) throw Bad($"tokenizer.ggml.scores has {scores.Length} entries, tokens {tokens.Length}");
        if (types is not null && types.Length != tokens.Length) throw Bad($"tokenizer.ggml.token_type has {types.Length} entries, tokens {tokens.Length}");
        var pieces = new List<(string, float, SentencePieceModelWriter.PieceType)>(tokens.Length);
        for (int i = 0; i < tokens.Length; i++)
        {
            string piece = tokens[i] as string ?? throw Bad($"tokenizer.ggml.tokens[{i}] is not a string");
            float score = scores is null ? 0 : scores[i] is float f ? f : throw Bad($"tokenizer.ggml.scores[{i}] is not a float32");
            int type = types is null ? 1 : types[i] is int t && t is >= 1 and <= 6 ? t : throw Bad($"tokenizer.ggml.token_type[{i}] is not a type 1..6");
            pieces.Add((piece, score, (SentencePieceModelWriter.PieceType)type));
        }
        var chatTemplates = _file.ChatTemplates();
        int unk = (int)(_file.Integer("tokenizer.ggml.unknown_token_id") ?? 0), bos = (int)(_file.Integer("tokenizer.ggml.bos_token_id") ?? 1), eos = (int)(_file.Integer("tokenizer.ggml.eos_token_id") ?? 2);
        return directory =>
        {
            // tokenizer.model for Microsoft.ML.Tokenizers, tokenizer.json for onnxruntime-genai.
            using (var stream = File.Create(Path.Combine(directory, "tokenizer.model")))
                SentencePieceModelWriter.Write(pieces, escapeWhitespaces: true, unk, bos, eos, stream);
            TokenizerJsonWriter.WriteSentencePieceBpe(directory, pieces, unk, bos, eos, contextLength, chatTemplates);
        };
    }
}
