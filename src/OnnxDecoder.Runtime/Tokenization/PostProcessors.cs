namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>tokenizer.json "post_processor" for a single sequence: the special tokens that
/// add_special_tokens puts around the ids (ByteLevel's post-processor only moves offsets: no ids).</summary>
public interface IPostProcessor
{
    List<int> Process(List<int> ids);
}

/// <summary>TemplateProcessing's "single" template: special tokens (each possibly several ids) and the sequence.</summary>
public sealed class TemplatePostProcessor(IReadOnlyList<int[]?> template) : IPostProcessor
{
    /// <summary><paramref name="template"/>: ids of each special-token item, null for the sequence ("A").</summary>
    public List<int> Process(List<int> ids)
    {
        var result = new List<int>(ids.Count + template.Count);
        foreach (var item in template)
        {
            if (item is null) result.AddRange(ids);
            else result.AddRange(item);
        }
        return result;
    }
}

/// <summary>BOS / EOS from tokenizer_config.json's add_bos_token / add_eos_token, for tokenizer.json
/// files without a post-processor (legacy Llama conversions); also RobertaProcessing / BertProcessing (cls, sep).</summary>
public sealed class BosEosPostProcessor(int? bos, int? eos) : IPostProcessor
{
    public List<int> Process(List<int> ids)
    {
        var result = new List<int>(ids.Count + 2);
        if (bos is int b) result.Add(b);
        result.AddRange(ids);
        if (eos is int e) result.Add(e);
        return result;
    }
}

public sealed class SequencePostProcessor(IReadOnlyList<IPostProcessor> processors) : IPostProcessor
{
    public List<int> Process(List<int> ids)
    {
        foreach (var processor in processors) ids = processor.Process(ids);
        return ids;
    }
}
