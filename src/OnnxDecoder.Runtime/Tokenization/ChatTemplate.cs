using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace OnnxDecoder.Runtime.Tokenization;

public sealed record ChatMessage(string Role, string Content);

/// <summary>Prompt formats of the families we export.</summary>
public enum ChatFormat
{
    /// <summary>Base models: BOS, then the messages' text, one per line.</summary>
    Plain,
    /// <summary>Llama 2 chat: &lt;s&gt;[INST] &lt;&lt;SYS&gt;&gt;\nsystem\n&lt;&lt;/SYS&gt;&gt;\n\nuser [/INST] answer &lt;/s&gt;</summary>
    Llama2,
    /// <summary>Llama 3: &lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\ncontent&lt;|eot_id|&gt;</summary>
    Llama3,
    /// <summary>Mistral / Mixtral: &lt;s&gt;[INST] user [/INST]answer&lt;/s&gt; (system text leads the first user turn)</summary>
    Mistral,
    /// <summary>ChatML (Qwen2, Qwen3): &lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n</summary>
    ChatMl,
    /// <summary>Phi-3 / Phi-3.5 / Phi-4-mini: &lt;|role|&gt;\ncontent&lt;|end|&gt;\n, then &lt;|assistant|&gt;\n</summary>
    Phi3,
    /// <summary>Gemma 2: &lt;bos&gt;&lt;start_of_turn&gt;user\ncontent&lt;end_of_turn&gt;\n, the assistant's role named model
    /// (Gemma has no system role: system text leads the first user turn)</summary>
    Gemma,
}

/// <summary>
/// Renders a conversation in a family's prompt format and encodes it, inserting special tokens by
/// id (never by spelling them in text). The format is read from tokenizer_config.json's
/// chat_template when it has one (by its markers; the Jinja itself is not run), else from the
/// special tokens the vocabulary has; base models get <see cref="ChatFormat.Plain"/>.
/// </summary>
public static class ChatTemplate
{
    public static ChatFormat Detect(string modelFolder, TextTokenizer tokenizer)
    {
        string config = Path.Combine(modelFolder, "tokenizer_config.json");
        string template = "";
        if (File.Exists(config) && new FileInfo(config).Length < (16 << 20))
        {
            try
            {
                using var document = JsonDocument.Parse(File.ReadAllBytes(config));
                if (document.RootElement.TryGetProperty("chat_template", out var t) && t.ValueKind == JsonValueKind.String) template = t.GetString()!;
            }
            catch (JsonException)
            {
                // a broken tokenizer_config.json only loses the template hint
            }
        }
        if (template.Contains("<|im_start|>", StringComparison.Ordinal) || (template.Length == 0 && tokenizer.SpecialTokenId("<|im_start|>") is not null)) return ChatFormat.ChatMl;
        if (template.Contains("<|start_header_id|>", StringComparison.Ordinal) || (template.Length == 0 && tokenizer.SpecialTokenId("<|start_header_id|>") is not null)) return ChatFormat.Llama3;
        if (template.Contains("<start_of_turn>", StringComparison.Ordinal) || (template.Length == 0 && tokenizer.SpecialTokenId("<start_of_turn>") is not null)) return ChatFormat.Gemma;
        if (template.Contains("<|assistant|>", StringComparison.Ordinal) && template.Contains("<|end|>", StringComparison.Ordinal)) return ChatFormat.Phi3;
        if (template.Contains("<<SYS>>", StringComparison.Ordinal)) return ChatFormat.Llama2;
        if (template.Contains("[INST]", StringComparison.Ordinal)) return ChatFormat.Mistral;
        return ChatFormat.Plain;
    }

    /// <summary>The conversation as segments: text, or a special token to insert by id.</summary>
    public static IReadOnlyList<(string Text, bool Special)> Segments(ChatFormat format, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true)
    {
        foreach (var m in messages)
            if (m.Role is not ("system" or "user" or "assistant")) throw new ArgumentException($"chat role '{m.Role}' is not system, user or assistant");
        var s = new List<(string, bool)>();
        void Text(string t) { if (t.Length > 0) s.Add((t, false)); }
        void Special(string t) => s.Add((t, true));
        string system = string.Join("\n", messages.Where(m => m.Role == "system").Select(m => m.Content));
        var turns = messages.Where(m => m.Role != "system").ToList();
        switch (format)
        {
            case ChatFormat.ChatMl:
                foreach (var m in messages)
                {
                    Special("<|im_start|>"); Text($"{m.Role}\n{m.Content}"); Special("<|im_end|>"); Text("\n");
                }
                if (addGenerationPrompt) { Special("<|im_start|>"); Text("assistant\n"); }
                break;
            case ChatFormat.Llama3:
                Special("<|begin_of_text|>");
                foreach (var m in messages)
                {
                    Special("<|start_header_id|>"); Text(m.Role); Special("<|end_header_id|>"); Text($"\n\n{m.Content}"); Special("<|eot_id|>");
                }
                if (addGenerationPrompt) { Special("<|start_header_id|>"); Text("assistant"); Special("<|end_header_id|>"); Text("\n\n"); }
                break;
            case ChatFormat.Llama2:
            case ChatFormat.Mistral:
                bool first = true;
                for (int i = 0; i < turns.Count; i++)
                {
                    var m = turns[i];
                    if (m.Role == "user")
                    {
                        string content = m.Content;
                        if (first && system.Length > 0)
                            content = format == ChatFormat.Llama2 ? $"<<SYS>>\n{system}\n<</SYS>>\n\n{content}" : $"{system}\n\n{content}";
                        Special("<s>");
                        Text($"[INST] {content} [/INST]");
                        first = false;
                    }
                    else
                    {
                        Text(format == ChatFormat.Llama2 ? $" {m.Content} " : m.Content);
                        Special("</s>");
                    }
                }
                break;
            case ChatFormat.Phi3:
                foreach (var m in messages)
                {
                    Special($"<|{m.Role}|>"); Text($"\n{m.Content}"); Special("<|end|>"); Text("\n");
                }
                if (addGenerationPrompt) { Special("<|assistant|>"); Text("\n"); }
                break;
            case ChatFormat.Gemma:
                Special("<bos>");
                for (int i = 0; i < turns.Count; i++)
                {
                    var m = turns[i];
                    string content = i == 0 && system.Length > 0 ? $"{system}\n\n{m.Content}" : m.Content;
                    Special("<start_of_turn>"); Text($"{(m.Role == "assistant" ? "model" : m.Role)}\n{content.Trim()}"); Special("<end_of_turn>"); Text("\n");
                }
                if (addGenerationPrompt) { Special("<start_of_turn>"); Text("model\n"); }
                break;
            default:
                Special("<bos>");
                Text(string.Join("\n", messages.Select(m => m.Content)));
                break;
        }
        return s;
    }

    /// <summary>Human-readable rendering (special tokens spelled) for logs and tests.</summary>
    public static string Render(ChatFormat format, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true) =>
        string.Concat(Segments(format, messages, addGenerationPrompt).Select(seg => seg.Text));

    /// <summary>Token ids of the conversation in <paramref name="format"/>.</summary>
    public static int[] Encode(ChatFormat format, IReadOnlyList<ChatMessage> messages, TextTokenizer tokenizer, bool addGenerationPrompt = true)
    {
        var ids = new List<int>();
        foreach (var (text, special) in Segments(format, messages, addGenerationPrompt))
        {
            if (!special) { ids.AddRange(tokenizer.Encode(text, addBos: false)); continue; }
            int? id = text == "<bos>" ? tokenizer.BosTokenId : tokenizer.SpecialTokenId(text) ?? (text == "<s>" ? tokenizer.BosTokenId : null);
            if (id is { } value) ids.Add(value);
            else if (text != "<bos>") throw new InvalidOperationException($"the vocabulary has no special token {text}, which the {format} chat format needs");
        }
        return [.. ids];
    }
}
