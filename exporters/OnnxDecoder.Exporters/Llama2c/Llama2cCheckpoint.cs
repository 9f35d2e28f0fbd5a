using System.Buffers.Binary;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.Llama2c;

/// <summary>
/// A llama2.c checkpoint (legacy v0 or version 1), read as hostile input: header fields are
/// range-checked and capped, sizes use checked arithmetic, and the file must be exactly as long
/// as its header says. Tensors are served lazily from the memory-mapped file under Hugging Face
/// Llama names; the rotary layout stays interleaved, which the graph handles natively.
/// </summary>
public sealed class Llama2cCheckpoint : IWeightSource, IDisposable
{
    public const uint Version1Magic = 0x616b3432; // "ak42"
    private const int MaxDim = 1 << 16, MaxHidden = 1 << 18, MaxLayers = 1024, MaxHeads = 1024, MaxVocab = 1 << 21, MaxSeqLen = 1 << 20;

    private readonly MappedFile _file;
    private readonly Dictionary<string, (long Offset, long[] Shape)> _tensors = new(StringComparer.Ordinal);

    private Llama2cCheckpoint(MappedFile file, DecoderConfig config, int version)
    {
        _file = file;
        Config = config;
        Version = version;
    }

    public DecoderConfig Config { get; }
    /// <summary>0 for the legacy format, 1 for "ak42" version 1.</summary>
    public int Version { get; }
    public string Path => _file.Path;
    public IReadOnlyCollection<string> Names => _tensors.Keys;

    public ITensorSource Get(string name) => _tensors.TryGetValue(name, out var t)
        ? _file.Tensor(ElementType.Float, t.Shape, t.Offset)
        : throw new KeyNotFoundException($"{Path}: no tensor '{name}'");

    public void Dispose() => _file.Dispose();

    public static Llama2cCheckpoint Open(string path) => MappedFile.Parse(path, Parse);

    private static Llama2cCheckpoint Parse(MappedFile file)
    {
        ModelFormatException Bad(string problem) => new(file.Path, problem);
        if (file.Length < 28) throw Bad($"file is {file.Length} bytes, shorter than a llama2.c header (28 bytes)");

        int version = 0;
        long headerBytes = 28, fieldsAt = 0;
        if (BinaryPrimitives.ReadUInt32LittleEndian(file.Span(0, 4)) == Version1Magic)
        {
            if (file.Length < 256) throw Bad($"file is {file.Length} bytes, shorter than a version-1 header (256 bytes)");
            version = BinaryPrimitives.ReadInt32LittleEndian(file.Span(4, 4));
            if (version != 1) throw Bad($"llama2.c checkpoint version {version} is not supported (only legacy and version 1)");
            headerBytes = 256;
            fieldsAt = 8;
        }
        int Field(int i) => BinaryPrimitives.ReadInt32LittleEndian(file.Span(fieldsAt + 4 * i, 4));
        int dim = Field(0), hidden = Field(1), layers = Field(2), heads = Field(3), kvHeads = Field(4), vocabField = Field(5), seqLen = Field(6);
        bool shared = version == 1 ? file.Span(36, 1)[0] != 0 : vocabField > 0;
        long vocab = Math.Abs((long)vocabField);

        void Range(string name, long value, long max)
        {
            if (value <= 0 || value > max) throw Bad($"header field {name} ({value}) must be between 1 and {max}");
        }
        Range("dim", dim, MaxDim);
        Range("hidden_dim", hidden, MaxHidden);
        Range("n_layers", layers, MaxLayers);
        Range("n_heads", heads, MaxHeads);
        Range("n_kv_heads", kvHeads, MaxHeads);
        Range("vocab_size", vocab, MaxVocab);
        Range("seq_len", seqLen, MaxSeqLen);
        if (version == 1 && file.Span(36, 1)[0] > 1) throw Bad($"header field shared_classifier ({file.Span(36, 1)[0]}) must be 0 or 1");
        if (dim % heads != 0) throw Bad($"header field dim ({dim}) must be divisible by n_heads ({heads})");
        if (heads % kvHeads != 0) throw Bad($"header field n_kv_heads ({kvHeads}) must divide n_heads ({heads})");
        int headDim = dim / heads;
        if (headDim % 2 != 0) throw Bad($"head size dim / n_heads ({headDim}) must be even for rotary embeddings");

        var checkpoint = new Llama2cCheckpoint(file, new DecoderConfig
        {
            ModelType = "llama", HiddenSize = dim, IntermediateSize = hidden, NumLayers = layers, NumHeads = heads, NumKvHeads = kvHeads,
            HeadDim = headDim, VocabSize = (int)vocab, MaxPositions = seqLen, NormEps = 1e-5, RopeTheta = 10000,
            RotaryLayout = RotaryLayout.Interleaved, TieWordEmbeddings = shared, BosTokenId = 1, EosTokenIds = [1, 2],
        }.Validate(file.Path), version);

        long offset = headerBytes;
        long kvDim = (long)kvHeads * headDim;
        void Add(string name, params long[] shape)
        {
            checkpoint._tensors[name] = (offset, shape);
            offset = checked(offset + 4 * ElementTypes.ElementCount(shape));
        }
        void PerLayer(string part, params long[] shape)
        {
            for (int i = 0; i < layers; i++) Add($"model.layers.{i}.{part}", shape);
        }

        try
        {
            if (version == 0)
            {
                Add("model.embed_tokens.weight", vocab, dim);
                PerLayer("input_layernorm.weight", dim);
            }
            else
            {
                PerLayer("input_layernorm.weight", dim);
                PerLayer("post_attention_layernorm.weight", dim);
                Add("model.norm.weight", dim);
                Add("model.embed_tokens.weight", vocab, dim);
            }
            PerLayer("self_attn.q_proj.weight", dim, dim);
            PerLayer("self_attn.k_proj.weight", kvDim, dim);
            PerLayer("self_attn.v_proj.weight", kvDim, dim);
            PerLayer("self_attn.o_proj.weight", dim, dim);
            if (version == 0) PerLayer("post_attention_layernorm.weight", dim);
            PerLayer("mlp.gate_proj.weight", hidden, dim);
            PerLayer("mlp.down_proj.weight", dim, hidden);
            PerLayer("mlp.up_proj.weight", hidden, dim);
            if (version == 0)
            {
                Add("model.norm.weight", dim);
                offset = checked(offset + 2L * 4 * seqLen * (headDim / 2)); // the unused cos/sin tables
            }
            if (!shared) Add("lm_head.weight", vocab, dim);
        }
        catch (OverflowException)
        {
            throw Bad("header sizes overflow when computing tensor offsets");
        }

        if (offset != file.Length)
            throw Bad(offset > file.Length
                ? $"file is truncated: the header needs {offset} bytes, the file has {file.Length}"
                : $"file has {file.Length - offset} unexpected trailing bytes after the {offset} bytes the header describes");
        return checkpoint;
    }
}
