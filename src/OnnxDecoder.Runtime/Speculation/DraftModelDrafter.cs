using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Runtime.Speculation;

/// <summary>
/// A smaller model with the same tokenizer drafts k tokens autoregressively, each drawn from its own
/// distribution under the same sampling options as the target (so that the verifier's p/q ratio compares
/// like with like). Its cache follows the verified sequence: a round appends what it has not seen yet
/// and rejected drafts are rolled back.
/// </summary>
public sealed class DraftModelDrafter : IDrafter, IDisposable
{
    private readonly DecoderSession _session;
    private readonly bool _ownsSession;
    private readonly List<int> _seen = [];   // the tokens in the draft's cache
    private readonly List<int> _history = [];
    private Sampler? _sampler;

    /// <summary>Opens the draft model in <paramref name="folder"/> (a batch of one).</summary>
    public DraftModelDrafter(string folder, DecoderSessionOptions? options = null)
        : this(new DecoderSession(folder, (options ?? new DecoderSessionOptions()) with { BatchSize = 1 }), ownsSession: true) { }

    /// <summary>Drafts with an open session (the caller keeps owning it).</summary>
    public DraftModelDrafter(DecoderSession session) : this(session, ownsSession: false) { }

    internal DraftModelDrafter(DecoderSession session, bool ownsSession)
    {
        _session = session;
        _ownsSession = ownsSession;
        try { SpeculativeDecoding.CheckCanRollBack(session, "draft model"); }
        catch { if (ownsSession) session.Dispose(); throw; }
    }

    public DecoderSession Session => _session;
    public string Name => _session.Folder.Directory;
    public bool HasDistributions => true;

    public void Begin(DecoderSession target, SamplingOptions sampling) => Begin(target.Folder, sampling);

    /// <summary>Begins a generation of the target in <paramref name="target"/> (the batcher has no session of its own per row).</summary>
    internal void Begin(ModelFolder target, SamplingOptions sampling)
    {
        CheckSameVocabulary(target, _session.Folder);
        // Its own seeded source: the draft's draws must not shift the target's.
        _sampler = new Sampler(sampling with { Seed = sampling.Seed is { } seed ? unchecked(seed * 31 + 17) : null }, _session.VocabSize);
        _session.Reset();
        _seen.Clear();
    }

    public int Draft(IReadOnlyList<int> context, Span<int> drafts, float[] distributions, CancellationToken cancellationToken)
    {
        var sampler = _sampler ?? throw new InvalidOperationException("call Begin before Draft");
        int vocab = _session.VocabSize;
        int k = Math.Min(drafts.Length, _session.MaxLength - context.Count + 1);
        if (k <= 0) return 0;
        int common = 0;
        while (common < _seen.Count && common < context.Count && _seen[common] == context[common]) common++;
        if (common < _seen.Count) Keep(common);
        if (common == context.Count) Keep(--common); // the draft needs logits after the last token: run it again
        var fresh = new long[context.Count - common];
        for (int i = 0; i < fresh.Length; i++) fresh[i] = context[common + i];
        var logits = _session.Append(fresh, fresh.Length, cancellationToken: cancellationToken);
        for (int i = common; i < context.Count; i++) _seen.Add(context[i]);
        _history.Clear();
        _history.AddRange(context);
        var step = new long[1];
        for (int i = 0; i < k; i++)
        {
            var q = distributions.AsSpan(i * vocab, vocab);
            sampler.Distribution(logits, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_history), q);
            drafts[i] = sampler.IsGreedy ? Sampler.ArgMax(q) : sampler.Choose(q);
            _history.Add(drafts[i]);
            if (i == k - 1) break;
            step[0] = drafts[i];
            logits = _session.Step(step, cancellationToken);
            _seen.Add(drafts[i]);
        }
        return k;
    }

    public void Keep(int length)
    {
        if (length >= _seen.Count) return;
        _session.TruncateTo(length);
        _seen.RemoveRange(length, _seen.Count - length);
    }

    /// <summary>Refuses a draft whose token ids mean something else than the target's.</summary>
    internal static void CheckSameVocabulary(ModelFolder target, ModelFolder draft)
    {
        string Where() => $"the draft model {draft.Directory} and the target {target.Directory}";
        if (target.VocabSize != draft.VocabSize)
            throw new ArgumentException($"{Where()} have different vocabularies ({draft.VocabSize} vs {target.VocabSize} tokens): draft with an export of the same tokenizer");
        foreach (var name in new[] { "tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer.tiktoken" })
        {
            string a = Path.Combine(target.Directory, name), b = Path.Combine(draft.Directory, name);
            if (File.Exists(a) != File.Exists(b) || (File.Exists(a) && !File.ReadAllBytes(a).AsSpan().SequenceEqual(File.ReadAllBytes(b))))
                throw new ArgumentException($"{Where()} have different tokenizers ({name} differs): draft with an export of the same tokenizer");
        }
    }

    public void Dispose()
    {
        if (_ownsSession) _session.Dispose();
    }
}
