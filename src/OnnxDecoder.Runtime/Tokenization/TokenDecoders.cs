using System.Globalization;
using System.Text;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>tokenizer.json "decoder": token strings to text. Each step maps the list of token
/// strings to a new list (Hugging Face's decode_chain); the text is their concatenation.</summary>
public interface ITokenDecoder
{
    List<string> DecodeChain(List<string> tokens);
}

/// <summary>ByteLevel: stand-in characters back to bytes, then UTF-8 (invalid bytes become U+FFFD).
/// A token with a character outside the alphabet (an added token) contributes its own UTF-8.</summary>
public sealed class ByteLevelDecoder : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var token in tokens)
            if (!ByteLevelAlphabet.TryDecode(token, bytes)) bytes.AddRange(Encoding.UTF8.GetBytes(token));
        return [Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes))];
    }
}

/// <summary>Metaspace: the replacement character back to a space; the first token's is dropped
/// unless the prepend scheme is never.</summary>
public sealed class MetaspaceDecoder(char replacement, bool dropFirst) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            var builder = new StringBuilder(tokens[i].Length);
            foreach (char c in tokens[i])
            {
                if (c != replacement) builder.Append(c);
                else if (!(i == 0 && dropFirst)) builder.Append(' ');
            }
            result.Add(builder.ToString());
        }
        return result;
    }
}

/// <summary>ByteFallback: runs of &lt;0xNN&gt; tokens become the text of their bytes, or one U+FFFD
/// per byte when the run is not valid UTF-8.</summary>
public sealed class ByteFallbackDecoder : ITokenDecoder
{
    private static readonly UTF8Encoding Strict = new(false, throwOnInvalidBytes: true);

    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var run = new List<byte>();
        void Flush()
        {
            if (run.Count == 0) return;
            try
            {
                result.Add(Strict.GetString(run.ToArray()));
            }
            catch (DecoderFallbackException)
            {
                for (int i = 0; i < run.Count; i++) result.Add("\uFFFD");
            }
            run.Clear();
        }
        foreach (var token in tokens)
        {
            if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
                && byte.TryParse(token.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
                run.Add(b);
            else
            {
                Flush();
                result.Add(token);
            }
        }
        Flush();
        return result;
    }
}

/// <summary>Fuse: all tokens into one.</summary>
public sealed class FuseDecoder : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>Strip: up to <paramref name="start"/> leading and <paramref name="stop"/> trailing
/// copies of a character off each token.</summary>
public sealed class StripDecoder(char content, int start, int stop) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        foreach (var token in tokens)
        {
            int from = 0, to = token.Length;
            while (from < Math.Min(start, token.Length) && token[from] == content) from++;
            for (int i = 0; i < stop && to > from && token[to - 1] == content; i++) to--;
            result.Add(token[from..to]);
        }
        return result;
    }
}

/// <summary>Replace: a string or regex pattern in each token.</summary>
public sealed class ReplaceDecoder(OnigPattern pattern, string content) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens) => tokens.Select(t => pattern.Replace(t, content)).ToList();
}

/// <summary>BPEDecoder: the end-of-word suffix becomes a space (nothing after the last token).</summary>
public sealed class BpeSuffixDecoder(string suffix) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens) =>
        tokens.Select((t, i) => t.Replace(suffix, i == tokens.Count - 1 ? "" : " ", StringComparison.Ordinal)).ToList();
}

public sealed class SequenceDecoder(IReadOnlyList<ITokenDecoder> decoders) : ITokenDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        foreach (var decoder in decoders) tokens = decoder.DecodeChain(tokens);
        return tokens;
    }
}
