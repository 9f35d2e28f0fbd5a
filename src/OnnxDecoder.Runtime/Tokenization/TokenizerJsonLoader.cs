using System.Text;
using System.Text.Json;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>
/// Reads a Hugging Face tokenizer.json into a <see cref="HuggingFaceTokenizer"/>. The file is
/// hostile input: size-capped by the caller, JSON depth and component nesting capped, ids
/// range-checked, duplicate vocabulary entries refused, and every component it cannot run (model
/// types other than BPE, BPE dropout, unknown normalizers, pre-tokenizers, post-processors or
/// decoders, regex constructs .NET cannot express) is a one-line error naming the file, the field
/// and the type.
/// </summary>
internal static class TokenizerJsonLoader
{
    private const int MaxId = 1 << 24;
    private const int MaxNesting = 8;

    public static HuggingFaceTokenizer Load(string path, string? configPath)
    {
        path = System.IO.Path.GetFullPath(path);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"is not valid JSON ({e.Message})", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var modelElement) || modelElement.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(path, "has no model object");
            var reader = new Reader(path);
            var model = reader.Model(modelElement);
            var normalizer = reader.Normalizer(Optional(root, "normalizer"), "normalizer", 0);
            var preTokenizer = reader.PreTokenizer(Optional(root, "pre_tokenizer"), "pre_tokenizer", 0);
            var decoder = reader.Decoder(Optional(root, "decoder"), "decoder", 0);
            var addedTokens = reader.AddedTokens(Optional(root, "added_tokens"), model);
            var added = new AddedVocabulary(addedTokens, model, normalizer);
            var postElement = Optional(root, "post_processor");
            var postProcessor = postElement is null
                ? reader.FromConfig(configPath, added, model)
                : reader.PostProcessor(postElement.Value, "post_processor", added, model, 0);
            return new HuggingFaceTokenizer(path, model, added, normalizer, preTokenizer, postProcessor, decoder);
        }
    }

    private static JsonElement? Optional(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;

    private sealed class Reader(string path)
    {
        private ModelFormatException Bad(string problem) => new(path, problem);

        private ModelFormatException Unsupported(string field, string type, string supported) =>
            Bad($"{field}.type '{type}' is not supported (supported: {supported}); this tokenizer cannot be run here");

        private string TypeOf(JsonElement element, string field) =>
            element.ValueKind == JsonValueKind.Object && element.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String
                ? t.GetString()! : throw Bad($"{field} must be an object with a string \"type\"");

        private string? String(JsonElement element, string name, string field)
        {
            if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
            return value.ValueKind == JsonValueKind.String ? value.GetString()! : throw Bad($"{field}.{name} must be a string");
        }

        private bool Bool(JsonElement element, string name, string field, bool fallback)
        {
            if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return fallback;
            return value.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Bad($"{field}.{name} must be true or false"),
            };
        }

        private int Int(JsonElement element, string name, string field, int fallback, int max)
        {
            if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return fallback;
            return value.TryGetInt32(out int n) && n >= 0 && n <= max ? n : throw Bad($"{field}.{name} must be an integer 0..{max}");
        }

        private int Id(JsonElement value, string field) =>
            value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int id) && id is >= 0 and < MaxId ? id : throw Bad($"{field} is not a valid id");

        private char OneChar(string? text, string field) =>
            text is { Length: 1 } ? text[0] : throw Bad($"{field} must be a single character (BMP), not '{text}'");

        private OnigPattern Pattern(JsonElement element, string field)
        {
            if (!element.TryGetProperty("pattern", out var pattern) || pattern.ValueKind != JsonValueKind.Object)
                throw Bad($"{field}.pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}");
            if (pattern.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String) return OnigPattern.Literal(s.GetString()!);
            if (pattern.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String)
            {
                try
                {
                    return OnigPattern.Create(r.GetString()!);
                }
                catch (ArgumentException e)
                {
                    throw Bad($"{field}.pattern.Regex cannot be run: {e.Message}");
                }
            }
            throw Bad($"{field}.pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}");
        }

        private void CheckDepth(int depth, string field)
        {
            if (depth > MaxNesting) throw Bad($"{field} nests Sequence components deeper than {MaxNesting}");
        }

        private List<JsonElement> Array(JsonElement element, string name, string field)
        {
            if (!element.TryGetProperty(name, out var value) || value.ValueKind != JsonValueKind.Array) throw Bad($"{field}.{name} must be an array");
            return [.. value.EnumerateArray()];
        }

        public BpeModel Model(JsonElement model)
        {
            string type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "BPE";
            if (type != "BPE") throw Bad($"model.type '{type}' is not supported (only BPE)");
            if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind != JsonValueKind.Null && !(dropout.TryGetDouble(out double d) && d == 0))
                throw Bad("model.dropout must be null or 0: BPE dropout samples tokenizations and is for training only");
            if (!model.TryGetProperty("vocab", out var vocabElement) || vocabElement.ValueKind != JsonValueKind.Object)
                throw Bad("model.vocab must be an object of token -> id");
            var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            var seenIds = new HashSet<int>();
            foreach (var p in vocabElement.EnumerateObject())
            {
                if (!p.Value.TryGetInt32(out int id) || id < 0 || id >= MaxId) throw Bad($"model.vocab['{p.Name}'] is not a valid id");
                if (!vocab.TryAdd(p.Name, id)) throw Bad($"model.vocab lists '{p.Name}' twice");
                if (!seenIds.Add(id)) throw Bad($"model.vocab gives id {id} to two tokens (one is '{p.Name}')");
            }
            string? prefix = String(model, "continuing_subword_prefix", "model");
            int prefixLength = string.IsNullOrEmpty(prefix) ? 0 : prefix.Length;
            var merges = new Dictionary<long, (int Rank, int Id)>(BpeModel.PairComparer.Instance);
            if (model.TryGetProperty("merges", out var mergesElement) && mergesElement.ValueKind == JsonValueKind.Array)
            {
                int rank = 0;
                foreach (var m in mergesElement.EnumerateArray())
                {
                    (string Left, string Right) pair;
                    if (m.ValueKind == JsonValueKind.String && m.GetString()!.IndexOf(' ') is int space and > 0)
                    {
                        string text = m.GetString()!;
                        pair = (text[..space], text[(space + 1)..]);
                    }
                    else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                        pair = (m[0].GetString()!, m[1].GetString()!);
                    else throw Bad("model.merges entries must be \"a b\" strings or [a, b] pairs");
                    if (!vocab.TryGetValue(pair.Left, out int left)) throw Bad($"model.merges[{rank}]: '{pair.Left}' is not in model.vocab");
                    if (!vocab.TryGetValue(pair.Right, out int right)) throw Bad($"model.merges[{rank}]: '{pair.Right}' is not in model.vocab");
                    if (prefixLength > pair.Right.Length) throw Bad($"model.merges[{rank}]: '{pair.Right}' is shorter than the continuing_subword_prefix");
                    string merged = pair.Left + pair.Right[prefixLength..];
                    if (!vocab.TryGetValue(merged, out int mergedId)) throw Bad($"model.merges[{rank}]: the merged token '{merged}' is not in model.vocab");
                    // A repeated pair keeps its last rank, as Hugging Face's map does.
                    merges[BpeModel.Pair(left, right)] = (rank, mergedId);
                    rank++;
                }
            }
            else if (model.TryGetProperty("merges", out var other) && other.ValueKind != JsonValueKind.Null) throw Bad("model.merges must be an array");
            string? unk = String(model, "unk_token", "model");
            if (unk is not null && !vocab.ContainsKey(unk)) throw Bad($"model.unk_token '{unk}' is not in model.vocab");
            return new BpeModel(vocab, merges, unk, Bool(model, "fuse_unk", "model", false), Bool(model, "byte_fallback", "model", false),
                Bool(model, "ignore_merges", "model", false), prefix, String(model, "end_of_word_suffix", "model"));
        }

        public List<AddedToken> AddedTokens(JsonElement? element, BpeModel model)
        {
            var tokens = new List<AddedToken>();
            if (element is null) return tokens;
            if (element.Value.ValueKind != JsonValueKind.Array) throw Bad("added_tokens must be an array");
            int index = 0;
            foreach (var token in element.Value.EnumerateArray())
            {
                string field = $"added_tokens[{index++}]";
                if (token.ValueKind != JsonValueKind.Object || !token.TryGetProperty("id", out var idElement)) throw Bad($"{field} must be an object with an id");
                int id = Id(idElement, $"{field}.id");
                string content = String(token, "content", field) ?? throw Bad($"{field}.content must be a string");
                bool special = Bool(token, "special", field, false);
                tokens.Add(new AddedToken(id, content, special, Bool(token, "normalized", field, !special), Bool(token, "lstrip", field, false),
                    Bool(token, "rstrip", field, false), Bool(token, "single_word", field, false)));
            }
            return tokens;
        }

        public ITextNormalizer? Normalizer(JsonElement? element, string field, int depth)
        {
            if (element is null) return null;
            CheckDepth(depth, field);
            var e = element.Value;
            string type = TypeOf(e, field);
            return type switch
            {
                "NFC" => new UnicodeNormalizer(NormalizationForm.FormC),
                "NFD" => new UnicodeNormalizer(NormalizationForm.FormD),
                "NFKC" => new UnicodeNormalizer(NormalizationForm.FormKC),
                "NFKD" => new UnicodeNormalizer(NormalizationForm.FormKD),
                "Lowercase" => new LowercaseNormalizer(),
                "Strip" => new StripNormalizer(Bool(e, "strip_left", field, true), Bool(e, "strip_right", field, true)),
                "Prepend" => new PrependNormalizer(String(e, "prepend", field) ?? throw Bad($"{field}.prepend must be a string")),
                "Replace" => new ReplaceNormalizer(Pattern(e, field), String(e, "content", field) ?? throw Bad($"{field}.content must be a string")),
                "Sequence" => new SequenceNormalizer(Array(e, "normalizers", field)
                    .Select((n, i) => Normalizer(n, $"{field}.normalizers[{i}]", depth + 1) ?? throw Bad($"{field}.normalizers[{i}] is null")).ToList()),
                _ => throw Unsupported(field, type, "NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence"),
            };
        }

        private SplitBehavior Behavior(JsonElement e, string field, SplitBehavior fallback)
        {
            string? behavior = String(e, "behavior", field);
            return behavior switch
            {
                null => fallback,
                "Removed" => SplitBehavior.Removed,
                "Isolated" => SplitBehavior.Isolated,
                "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
                "MergedWithNext" => SplitBehavior.MergedWithNext,
                "Contiguous" => SplitBehavior.Contiguous,
                _ => throw Bad($"{field}.behavior '{behavior}' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous"),
            };
        }

        public IPreTokenizer? PreTokenizer(JsonElement? element, string field, int depth)
        {
            if (element is null) return null;
            CheckDepth(depth, field);
            var e = element.Value;
            string type = TypeOf(e, field);
            switch (type)
            {
                case "Split":
                    return new SplitPreTokenizer(Pattern(e, field), Behavior(e, field, SplitBehavior.Isolated), Bool(e, "invert", field, false));
                case "ByteLevel":
                    return new ByteLevelPreTokenizer(Bool(e, "add_prefix_space", field, true), Bool(e, "use_regex", field, true));
                case "Metaspace":
                {
                    char replacement = OneChar(String(e, "replacement", field) ?? "\u2581", $"{field}.replacement");
                    string? scheme = String(e, "prepend_scheme", field);
                    var prepend = scheme switch
                    {
                        "always" => MetaspacePreTokenizer.Prepend.Always,
                        "first" => MetaspacePreTokenizer.Prepend.First,
                        "never" => MetaspacePreTokenizer.Prepend.Never,
                        null => Bool(e, "add_prefix_space", field, true) ? MetaspacePreTokenizer.Prepend.Always : MetaspacePreTokenizer.Prepend.Never,
                        _ => throw Bad($"{field}.prepend_scheme '{scheme}' is not one of always, first, never"),
                    };
                    return new MetaspacePreTokenizer(replacement, prepend, Bool(e, "split", field, true));
                }
                case "Digits":
                    return new DigitsPreTokenizer(Bool(e, "individual_digits", field, false));
                case "Punctuation":
                    return new PunctuationPreTokenizer(Behavior(e, field, SplitBehavior.Isolated));
                case "Whitespace":
                    return new WhitespacePreTokenizer();
                case "WhitespaceSplit":
                    return new WhitespaceSplitPreTokenizer();
                case "CharDelimiterSplit":
                {
                    string delimiter = String(e, "delimiter", field) ?? throw Bad($"{field}.delimiter must be a string");
                    if (Rune.DecodeFromUtf16(delimiter, out var rune, out int length) != System.Buffers.OperationStatus.Done || length != delimiter.Length)
                        throw Bad($"{field}.delimiter must be one character");
                    return new CharDelimiterPreTokenizer(rune);
                }
                case "Sequence":
                    return new SequencePreTokenizer(Array(e, "pretokenizers", field)
                        .Select((p, i) => PreTokenizer(p, $"{field}.pretokenizers[{i}]", depth + 1) ?? throw Bad($"{field}.pretokenizers[{i}] is null")).ToList());
                default:
                    throw Unsupported(field, type, "Split, ByteLevel, Metaspace, Digits, Punctuation, Whitespace, WhitespaceSplit, CharDelimiterSplit, Sequence");
            }
        }

        public ITokenDecoder? Decoder(JsonElement? element, string field, int depth)
        {
            if (element is null) return null;
            CheckDepth(depth, field);
            var e = element.Value;
            string type = TypeOf(e, field);
            switch (type)
            {
                case "ByteLevel": return new ByteLevelDecoder();
                case "ByteFallback": return new ByteFallbackDecoder();
                case "Fuse": return new FuseDecoder();
                case "Strip":
                    return new StripDecoder(OneChar(String(e, "content", field), $"{field}.content"), Int(e, "start", field, 0, 1 << 16), Int(e, "stop", field, 0, 1 << 16));
                case "Replace":
                    return new ReplaceDecoder(Pattern(e, field), String(e, "content", field) ?? throw Bad($"{field}.content must be a string"));
                case "Metaspace":
                {
                    char replacement = OneChar(String(e, "replacement", field) ?? "\u2581", $"{field}.replacement");
                    string? scheme = String(e, "prepend_scheme", field);
                    bool dropFirst = scheme is null ? Bool(e, "add_prefix_space", field, true) : scheme != "never";
                    return new MetaspaceDecoder(replacement, dropFirst);
                }
                case "BPEDecoder":
                    return new BpeSuffixDecoder(String(e, "suffix", field) ?? "</w>");
                case "Sequence":
                    return new SequenceDecoder(Array(e, "decoders", field)
                        .Select((d, i) => Decoder(d, $"{field}.decoders[{i}]", depth + 1) ?? throw Bad($"{field}.decoders[{i}] is null")).ToList());
                default:
                    throw Unsupported(field, type, "ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, BPEDecoder, Sequence");
            }
        }

        private int[] SpecialIds(string token, AddedVocabulary added, BpeModel model, string field) =>
            [added.ByContent(token)?.Id ?? model.TokenToId(token) ?? throw Bad($"{field}: token '{token}' is neither an added token nor in model.vocab")];

        public IPostProcessor? PostProcessor(JsonElement e, string field, AddedVocabulary added, BpeModel model, int depth)
        {
            CheckDepth(depth, field);
            string type = TypeOf(e, field);
            switch (type)
            {
                case "ByteLevel":
                    return null; // offsets only
                case "TemplateProcessing":
                {
                    var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
                    if (e.TryGetProperty("special_tokens", out var table) && table.ValueKind == JsonValueKind.Object)
                        foreach (var entry in table.EnumerateObject())
                        {
                            string f = $"{field}.special_tokens['{entry.Name}']";
                            if (entry.Value.ValueKind != JsonValueKind.Object) throw Bad($"{f} must be an object");
                            specials[entry.Name] = Array(entry.Value, "ids", f).Select((id, i) => Id(id, $"{f}.ids[{i}]")).ToArray();
                        }
                    var template = new List<int[]?>();
                    var single = Array(e, "single", field);
                    for (int i = 0; i < single.Count; i++)
                    {
                        string f = $"{field}.single[{i}]";
                        if (single[i].ValueKind == JsonValueKind.Object && single[i].TryGetProperty("Sequence", out _)) template.Add(null);
                        else if (single[i].ValueKind == JsonValueKind.Object && single[i].TryGetProperty("SpecialToken", out var special)
                            && special.ValueKind == JsonValueKind.Object && String(special, "id", f) is { } name)
                            template.Add(specials.TryGetValue(name, out var ids) ? ids : throw Bad($"{f} names '{name}', which special_tokens does not list"));
                        else throw Bad($"{f} must be {{\"Sequence\": ...}} or {{\"SpecialToken\": {{\"id\": ...}}}}");
                    }
                    return new TemplatePostProcessor(template);
                }
                case "RobertaProcessing" or "BertProcessing":
                {
                    int Token(string name)
                    {
                        if (!e.TryGetProperty(name, out var pair) || pair.ValueKind != JsonValueKind.Array || pair.GetArrayLength() != 2)
                            throw Bad($"{field}.{name} must be [token, id]");
                        return Id(pair[1], $"{field}.{name}[1]");
                    }
                    return new BosEosPostProcessor(Token("cls"), Token("sep"));
                }
                case "Sequence":
                {
                    var processors = Array(e, "processors", field)
                        .Select((p, i) => PostProcessor(p, $"{field}.processors[{i}]", added, model, depth + 1)).OfType<IPostProcessor>().ToList();
                    return processors.Count == 0 ? null : new SequencePostProcessor(processors);
                }
                default:
                    throw Unsupported(field, type, "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence");
            }
        }

        /// <summary>tokenizer_config.json's add_bos_token / add_eos_token with its bos_token / eos_token
        /// (a string or {"content": ...}), for a tokenizer.json without a post-processor.</summary>
        public IPostProcessor? FromConfig(string? configPath, AddedVocabulary added, BpeModel model)
        {
            if (configPath is null || !File.Exists(configPath)) return null;
            if (new FileInfo(configPath).Length > 16L << 20) throw new ModelFormatException(configPath, "is over the 16 MiB limit for tokenizer_config.json");
            try
            {
                using var config = JsonDocument.Parse(File.ReadAllBytes(configPath), new JsonDocumentOptions { MaxDepth = 64 });
                var root = config.RootElement;
                if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException(configPath, "must be a JSON object");
                int? Wanted(string flag, string tokenField)
                {
                    if (!root.TryGetProperty(flag, out var on) || on.ValueKind != JsonValueKind.True) return null;
                    string? token = root.TryGetProperty(tokenField, out var t) ? t.ValueKind switch
                    {
                        JsonValueKind.String => t.GetString(),
                        JsonValueKind.Object when t.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
                        _ => null,
                    } : null;
                    if (token is null) throw new ModelFormatException(configPath, $"{flag} is true but {tokenField} is not a string or {{\"content\": ...}}");
                    return added.ByContent(token)?.Id ?? model.TokenToId(token)
                        ?? throw new ModelFormatException(configPath, $"{tokenField} '{token}' is not a token of {System.IO.Path.GetFileName(path)}");
                }
                int? bos = Wanted("add_bos_token", "bos_token"), eos = Wanted("add_eos_token", "eos_token");
                return bos is null && eos is null ? null : new BosEosPostProcessor(bos, eos);
            }
            catch (JsonException e)
            {
                throw new ModelFormatException(configPath, $"is not valid JSON ({e.Message})", e);
            }
        }
    }
}
