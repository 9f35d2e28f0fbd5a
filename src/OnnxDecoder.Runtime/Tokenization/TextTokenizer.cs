using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>
/// Text to token ids and back. Loads, from a model folder or a Hugging Face folder:
/// <list type="bullet">
/// <item><c>tokenizer.json</c> through <see cref="HuggingFaceTokenizer"/> (our hand-written
/// Hugging Face pipeline, the reference format), with <c>tokenizer_config.json</c>;</item>
/// <item><c>tokenizer.model</c> (SentencePiece, through Microsoft.ML.Tokenizers) when there is no
/// tokenizer.json, or when it keeps spaces unescaped: a llama2.c vocabulary converted at export,
/// which must encode exactly as llama2.c (it reads "&lt;s&gt;" in text as characters);</item>
/// <item><c>vocab.json</c> + <c>merges.txt</c> (GPT-2 byte-level BPE) or <c>tokenizer.tiktoken</c>,
/// through Microsoft.ML.Tokenizers, when there is no tokenizer.json.</item>
/// </list>
/// </summary>
public sealed class TextTokenizer
{
    private const long MaxTokenizerBytes = 64L << 20;

    public TextTokenizer(Tokenizer inner, int? bosTokenId, string kind)
    {
        Inner = inner;
        BosTokenId = bosTokenId;
        Kind = kind;
        if (inner is SentencePieceTokenizer sentencePiece)
            _byteTokens = sentencePiece.Vocabulary.Where(kv => kv.Key.Length == 6 && kv.Key.StartsWith("<0x", StringComparison.Ordinal) && kv.Key.EndsWith('>'))
                .Select(kv => kv.Value).ToHashSet();
    }

    public TextTokenizer(HuggingFaceTokenizer pipeline, int? bosTokenId)
    {
        Pipeline = pipeline;
        BosTokenId = bosTokenId;
        Kind = "tokenizer.json";
    }

    private readonly HashSet<int> _byteTokens = [];

    /// <summary>The id of a special or control token spelled <paramref name="token"/>, if the vocabulary has one.</summary>
    public int? SpecialTokenId(string token) => Pipeline is not null ? Pipeline.TokenToId(token) : Inner switch
    {
        SentencePieceTokenizer sp => sp.Vocabulary.TryGetValue(token, out int id) ? id : null,
        BpeTokenizer bpe => bpe.SpecialTokens?.TryGetValue(token, out int id) == true ? id : bpe.Vocabulary.TryGetValue(token, out int v) ? v : null,
        TiktokenTokenizer tiktoken => tiktoken.SpecialTokens?.TryGetValue(token, out int id) == true ? id : null,
        _ => null,
    };

    /// <summary>A byte-fallback token (&lt;0xNN&gt;): one byte of a character.</summary>
    public bool IsByteToken(int id) => Pipeline?.Model.IsByteToken(id) ?? _byteTokens.Contains(id);

    /// <summary>The Microsoft.ML.Tokenizers tokenizer; null for tokenizer.json (see <see cref="Pipeline"/>).</summary>
    public Tokenizer? Inner { get; }
    /// <summary>The tokenizer.json pipeline; null for the other kinds.</summary>
    public HuggingFaceTokenizer? Pipeline { get; }
    public int? BosTokenId { get; }
    /// <summary>sentencepiece, bpe (vocab/merges), tiktoken, or tokenizer.json.</summary>
    public string Kind { get; }

    /// <summary>The files <see cref="Load"/> looks for, in the order it prefers them.</summary>
    public static IReadOnlyList<string> FileNames { get; } = ["tokenizer.json", "tokenizer.model", "vocab.json + merges.txt", "tokenizer.tiktoken"];

    /// <summary>Whether <paramref name="folder"/> holds any tokenizer files <see cref="Load"/> reads.</summary>
    public static bool Exists(string folder) =>
        File.Exists(Path.Combine(folder, "tokenizer.json")) || File.Exists(Path.Combine(folder, "tokenizer.model"))
        || (File.Exists(Path.Combine(folder, "vocab.json")) && File.Exists(Path.Combine(folder, "merges.txt"))) || File.Exists(Path.Combine(folder, "tokenizer.tiktoken"));

    /// <summary>The folder's tokenizer, or null when it has no tokenizer files (token-id prompts still run).</summary>
    public static TextTokenizer? LoadIfPresent(string folder, int? bosTokenId) => Exists(folder) ? Load(folder, bosTokenId) : null;

    public static TextTokenizer Load(string folder, int? bosTokenId)
    {
        string model = Path.Combine(folder, "tokenizer.model");
        string vocab = Path.Combine(folder, "vocab.json"), merges = Path.Combine(folder, "merges.txt");
        string json = Path.Combine(folder, "tokenizer.json");
        string tiktoken = Path.Combine(folder, "tokenizer.tiktoken");
        SentencePieceTokenizer? sentencePiece = File.Exists(model) ? LoadSentencePiece(model) : null;
        if (File.Exists(json) && sentencePiece is not { EscapeWhiteSpaces: false })
        {
            CheckSize(json);
            string config = Path.Combine(folder, "tokenizer_config.json");
            return new TextTokenizer(GuardedLoad(json, () => HuggingFaceTokenizer.Load(json, File.Exists(config) ? config : null)), bosTokenId);
        }
        if (sentencePiece is not null) return new TextTokenizer(sentencePiece, bosTokenId, "sentencepiece");
        if (File.Exists(vocab) && File.Exists(merges))
        {
            CheckSize(vocab);
            CheckSize(merges);
            return new TextTokenizer(Guarded(merges, () => ByteLevelBpe.FromFiles(vocab, merges)), bosTokenId, "bpe");
        }
        if (File.Exists(tiktoken))
        {
            CheckSize(tiktoken);
            return new TextTokenizer(Guarded(tiktoken, () => TiktokenFile.Load(tiktoken, Path.Combine(folder, "tokenizer_config.json"))), bosTokenId, "tiktoken");
        }
        throw new ModelFormatException(folder, $"no tokenizer found: looked for {string.Join(", ", FileNames)}; text needs one of them (token-id prompts run without)");
    }

    private static SentencePieceTokenizer LoadSentencePiece(string model)
    {
        CheckSize(model);
        using var stream = File.OpenRead(model);
        try
        {
            return SentencePieceTokenizer.Create(stream, false, false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Parse errors include IOException subclasses (protobuf's InvalidProtocolBufferException).
            throw new ModelFormatException(model, $"is not a SentencePiece model this library can run ({e.GetType().Name}: {e.Message})", e);
        }
    }

    /// <summary>Tokenizer files come from elsewhere: whatever the library throws on a malformed one
    /// becomes a ModelFormatException naming the file.</summary>
    private static Tokenizer Guarded(string path, Func<Tokenizer> load) => GuardedLoad(path, load);

    private static T GuardedLoad<T>(string path, Func<T> load)
    {
        try
        {
            return load();
        }
        catch (Exception e) when (e is not (ModelFormatException or OutOfMemoryException))
        {
            // Parse errors include IOException subclasses (protobuf's InvalidProtocolBufferException).
            throw new ModelFormatException(path, $"is not a tokenizer this library can run ({e.GetType().Name}: {e.Message})", e);
        }
    }

    private static void CheckSize(string path)
    {
        long size = new FileInfo(path).Length;
        if (size > MaxTokenizerBytes) throw new ModelFormatException(path, $"is {size} bytes, over the {MaxTokenizerBytes}-byte limit for tokenizer files");
    }

    /// <summary>The text's ids with no special tokens added (text that spells an added token, such
    /// as &lt;|im_start|&gt;, still becomes that token through tokenizer.json), and
    /// <see cref="BosTokenId"/> first when <paramref name="addBos"/>.</summary>
    public int[] Encode(string text, bool addBos)
    {
        IReadOnlyList<int> ids = Pipeline is not null ? Pipeline.Encode(text, addSpecialTokens: false) : Inner!.EncodeToIds(text);
        if (!addBos || BosTokenId is null) return [.. ids];
        var result = new int[ids.Count + 1];
        result[0] = BosTokenId.Value;
        for (int i = 0; i < ids.Count; i++) result[i + 1] = ids[i];
        return result;
    }

    /// <summary>Hugging Face's encode: with <paramref name="addSpecialTokens"/>, tokenizer.json's
    /// post-processor (or tokenizer_config.json's add_bos_token / add_eos_token) adds its special
    /// tokens; a SentencePiece model adds BOS; vocab.json / tiktoken BPE adds none.</summary>
    public int[] EncodeText(string text, bool addSpecialTokens)
    {
        if (Pipeline is not null) return Pipeline.Encode(text, addSpecialTokens);
        var ids = Encode(text, addBos: false);
        int? bos = BosTokenId ?? (Inner as SentencePieceTokenizer)?.BeginningOfSentenceId;
        return addSpecialTokens && Inner is SentencePieceTokenizer && bos is int b ? [b, .. ids] : ids;
    }

    /// <summary>Text of the ids, BOS left out.</summary>
    public string Decode(IEnumerable<int> ids) => Pipeline is not null
        ? Pipeline.Decode(ids.Where(id => id != BosTokenId), skipSpecialTokens: false)
        : Inner!.Decode(ids.Where(id => id != BosTokenId)) ?? "";

    /// <summary>Hugging Face's decode: every id, special tokens dropped when <paramref name="skipSpecialTokens"/>.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        if (Pipeline is not null) return Pipeline.Decode(ids, skipSpecialTokens);
        var kept = ids.Where(id => !skipSpecialTokens || !IsSpecial(id));
        return Inner!.Decode(kept) ?? "";
    }

    private bool IsSpecial(int id) => Inner switch
    {
        SentencePieceTokenizer sp => id == sp.BeginningOfSentenceId || id == sp.EndOfSentenceId || id == sp.UnknownId,
        BpeTokenizer bpe => bpe.SpecialTokens?.Values.Contains(id) == true,
        TiktokenTokenizer tiktoken => tiktoken.SpecialTokens?.Values.Contains(id) == true,
        _ => false,
    };
}

/// <summary>
/// Streams text as tokens arrive without splitting a UTF-8 character: text is released only when
/// the decoded tail no longer ends in a replacement character, and each step decodes a short
/// window of recent tokens (so SentencePiece's word-initial spaces come out right) rather than the
/// whole sequence.
/// </summary>
public sealed class IncrementalDetokenizer
{
    private readonly TextTokenizer _tokenizer;
    private readonly List<int> _ids = [];
    private int _prefixOffset, _readOffset;

    public IncrementalDetokenizer(TextTokenizer tokenizer, IReadOnlyList<int> context)
    {
        _tokenizer = tokenizer;
        _ids.AddRange(context);
        _readOffset = _ids.Count;
        _prefixOffset = Math.Max(0, _ids.Count - 6);
    }

    /// <summary>Adds one token and returns the text it completes (possibly empty).</summary>
    public string Add(int id)
    {
        _ids.Add(id);
        // A window that starts on byte tokens makes SentencePiece treat the next word as the
        // first of the text and drop its space: start it on the token before them instead.
        while (_prefixOffset > 0 && _tokenizer.IsByteToken(_ids[_prefixOffset])) _prefixOffset--;
        string prefix = _tokenizer.Decode(Window(_prefixOffset, _readOffset));
        string full = _tokenizer.Decode(Window(_prefixOffset, _ids.Count));
        if (full.Length <= prefix.Length || full.EndsWith('\uFFFD') || !full.StartsWith(prefix, StringComparison.Ordinal)) return "";
        _prefixOffset = _readOffset;
        _readOffset = _ids.Count;
        return full[prefix.Length..];
    }

    /// <summary>Whatever is still held back at the end of generation.</summary>
    public string Flush()
    {
        string prefix = _tokenizer.Decode(Window(_prefixOffset, _readOffset));
        string full = _tokenizer.Decode(Window(_prefixOffset, _ids.Count));
        _prefixOffset = _readOffset = _ids.Count;
        return full.Length > prefix.Length && full.StartsWith(prefix, StringComparison.Ordinal) ? full[prefix.Length..] : "";
    }

    private IEnumerable<int> Window(int start, int end)
    {
        for (int i = start; i < end; i++) yield return _ids[i];
    }
}

/// <summary>
/// A tiktoken rank file (each line: base64 token bytes, space, rank) through TiktokenTokenizer.
/// The pre-tokenizer regex is tokenizer_config.json's "pat_str" when given, else GPT-2's; special
/// tokens come from its "special_tokens" object (token -> id), else &lt;|endoftext|&gt; after the ranks.
/// </summary>
internal static class TiktokenFile
{
    public static Tokenizer Load(string path, string configPath)
    {
        string pattern = ByteLevelPreTokenizer.Gpt2Pattern;
        Dictionary<string, int>? special = null;
        if (File.Exists(configPath))
        {
            try
            {
                using var config = JsonDocument.Parse(File.ReadAllBytes(configPath), new JsonDocumentOptions { MaxDepth = 16 });
                if (config.RootElement.TryGetProperty("pat_str", out var p) && p.ValueKind == JsonValueKind.String) pattern = p.GetString()!;
                if (config.RootElement.TryGetProperty("special_tokens", out var s) && s.ValueKind == JsonValueKind.Object)
                    special = s.EnumerateObject().ToDictionary(t => t.Name, t => t.Value.TryGetInt32(out int id) && id >= 0 ? id
                        : throw new ModelFormatException(configPath, $"special_tokens['{t.Name}'] must be a non-negative id"));
            }
            catch (JsonException e)
            {
                throw new ModelFormatException(configPath, $"is not valid JSON ({e.Message})", e);
            }
        }
        int ranks = File.ReadLines(path).Count(l => l.Length > 0);
        special ??= new Dictionary<string, int> { ["<|endoftext|>"] = ranks };
        try
        {
            using var stream = File.OpenRead(path);
            var preTokenizer = new RegexPreTokenizer(new System.Text.RegularExpressions.Regex(pattern, System.Text.RegularExpressions.RegexOptions.Compiled), special);
            return TiktokenTokenizer.Create(stream, preTokenizer, null, special);
        }
        catch (Exception e) when (e is FormatException or ArgumentException or InvalidOperationException)
        {
            throw new ModelFormatException(path, $"is not a tiktoken rank file ({e.Message})", e);
        }
    }
}

/// <summary>GPT-2 style byte-level BPE from vocab.json + merges.txt.</summary>
internal static class ByteLevelBpe
{
    public static Tokenizer FromFiles(string vocabPath, string mergesPath)
    {
        var vocab = ReadVocab(vocabPath);
        var merges = File.ReadLines(mergesPath).Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal)).ToList();
        return Create(vocab, merges);
    }

    public static Tokenizer Create(IEnumerable<KeyValuePair<string, int>> vocab, IEnumerable<string> merges, IReadOnlyDictionary<string, int>? special = null) =>
        BpeTokenizer.Create(new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            SpecialTokens = special is { Count: > 0 } ? special : null,
            PreTokenizer = new RegexPreTokenizer(new System.Text.RegularExpressions.Regex(ByteLevelPreTokenizer.Gpt2Pattern, System.Text.RegularExpressions.RegexOptions.Compiled), special is { Count: > 0 } ? special : null),
        });

    private static List<KeyValuePair<string, int>> ReadVocab(string path)
    {
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path));
            if (document.RootElement.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, "vocab.json must be an object of token -> id");
            var list = new List<KeyValuePair<string, int>>();
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (property.Value.ValueKind != JsonValueKind.Number || !property.Value.TryGetInt32(out int id) || id < 0)
                    throw new ModelFormatException(path, $"token '{property.Name}' has an invalid id {property.Value.GetRawText()}");
                list.Add(new(property.Name, id));
            }
            return list;
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"is not valid JSON ({e.Message})", e);
        }
    }
}
