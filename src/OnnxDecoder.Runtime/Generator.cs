using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime;

public enum StopReason { Eos, MaxTokens, StopString, ContextFull }

public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 256;
    public SamplingOptions Sampling { get; init; } = new();
    /// <summary>Stop when the generated text contains one of these (the text is cut before it).</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>End-of-sequence ids; default: the model folder's eos_token_id list.</summary>
    public IReadOnlyList<int>? EosTokenIds { get; init; }
    /// <summary>Allows only tokens that keep the output inside a grammar (JSON, a JSON Schema, a regex,
    /// a tool call); each sequence keeps its own state. Null: unconstrained.</summary>
    public Sampling.Constraints.ILogitsConstraint? Constraint { get; init; }
    /// <summary>Speculative decoding (a drafter and k); null: one target run per token. Ignored under a
    /// <see cref="Constraint"/>, which decodes one token per run.</summary>
    public Speculation.SpeculationOptions? Speculation { get; init; }
}

public sealed record GenerationTimings(double PrefillMs, double DecodeMs, double TimeToFirstTokenMs, int PrefillTokens, int DecodedTokens)
{
    public double PrefillTokensPerSecond => PrefillMs > 0 ? PrefillTokens / (PrefillMs / 1000) : 0;
    /// <summary>Decode steps per second (each step runs the model once for every row).</summary>
    public double DecodeTokensPerSecond => DecodeMs > 0 ? DecodedTokens / (DecodeMs / 1000) : 0;
}

/// <param name="Speculation">Drafts proposed and accepted, when generated with speculation.</param>
public sealed record GenerationResult(int[] PromptTokenIds, int[] TokenIds, string Text, StopReason StopReason, GenerationTimings Timings,
    Speculation.SpeculationStats? Speculation = null);

/// <summary>One piece of a stream: a generated token and the text it released (may be empty: text
/// that could still become part of a stop string, or of a multi-byte character, is held back).
/// A last piece with TokenId -1 releases text held back when generation ends.</summary>
public sealed record GeneratedToken(int TokenId, string Text);

/// <summary>
/// Prefill and decode loops over a <see cref="DecoderSession"/>: sampling, stop conditions (EOS,
/// max tokens, stop strings, full context), streaming and cancellation. A generator may continue a
/// conversation: <see cref="Continue"/> appends to the cached sequence instead of starting over.
/// Without a tokenizer (a folder with no tokenizer files) it generates from token ids alone, with
/// empty text.
/// </summary>
public sealed class Generator(DecoderSession session, TextTokenizer? tokenizer)
{
    private readonly List<int> _sequence = [];   // every token of the conversation (batch of one)
    private int? _pending;                       // the last sampled token, not yet run through the model

    public DecoderSession Session { get; } = session;
    public TextTokenizer? Tokenizer { get; } = tokenizer;

    /// <summary>Encodes <paramref name="prompt"/> (with BOS) and generates from a fresh cache.</summary>
    public GenerationResult Generate(string prompt, GenerationOptions options, Action<GeneratedToken>? onToken = null, CancellationToken cancellationToken = default) =>
        Generate(TextTokenizerOrThrow().Encode(prompt, addBos: true), options, onToken, cancellationToken);

    private TextTokenizer TextTokenizerOrThrow() => Tokenizer ?? throw new InvalidOperationException(
        $"{Session.Folder.Directory}: a text prompt needs tokenizer files ({string.Join(", ", TextTokenizer.FileNames)}) and this folder has none: add them, or give token ids");

    /// <summary>Generates after <paramref name="promptIds"/> from a fresh cache.</summary>
    public GenerationResult Generate(IReadOnlyList<int> promptIds, GenerationOptions options, Action<GeneratedToken>? onToken = null, CancellationToken cancellationToken = default)
    {
        Session.Reset();
        _sequence.Clear();
        _pending = null;
        return Run(promptIds, options, onToken, cancellationToken);
    }

    /// <summary>Continues the conversation: <paramref name="newIds"/> follow what was generated
    /// before, and the cached keys and values of the earlier turns are reused.</summary>
    public GenerationResult Continue(IReadOnlyList<int> newIds, GenerationOptions options, Action<GeneratedToken>? onToken = null, CancellationToken cancellationToken = default)
    {
        var input = new List<int>();
        if (_pending is { } pending) input.Add(pending);
        input.AddRange(newIds);
        _pending = null;
        return Run(input, options, onToken, cancellationToken, reportedPrompt: newIds);
    }

    /// <summary>
    /// Generates a reply to a whole conversation (e.g. rendered with <see cref="Tokenization.ChatTemplate"/>).
    /// When the tokens already in the cache are a prefix of <paramref name="conversationIds"/>, only the
    /// rest is run through the model; otherwise the cache starts over.
    /// </summary>
    public GenerationResult Respond(IReadOnlyList<int> conversationIds, GenerationOptions options, Action<GeneratedToken>? onToken = null, CancellationToken cancellationToken = default)
    {
        var cached = _pending is { } pending ? _sequence.Append(pending).ToList() : _sequence;
        if (_sequence.Count > 0 && cached.Count < conversationIds.Count && cached.SequenceEqual(conversationIds.Take(cached.Count)))
        {
            var rest = conversationIds.Skip(_sequence.Count).ToList();
            _pending = null;
            return Run(rest, options, onToken, cancellationToken, reportedPrompt: conversationIds.ToList());
        }
        return Generate(conversationIds, options, onToken, cancellationToken);
    }

    /// <summary>
    /// Streams tokens as they are generated. The generator runs at most a few tokens ahead of the
    /// reader (a bounded channel), so cancelling the token, or leaving the loop, stops generation
    /// within one step.
    /// </summary>
    public IAsyncEnumerable<GeneratedToken> StreamAsync(string prompt, GenerationOptions options, CancellationToken cancellationToken = default) =>
        StreamAsync(TextTokenizerOrThrow().Encode(prompt, addBos: true), options, null, cancellationToken);

    /// <summary>Streams the generation after <paramref name="promptIds"/> (from a fresh cache);
    /// <paramref name="onResult"/> receives the whole result once generation has finished.</summary>
    public async IAsyncEnumerable<GeneratedToken> StreamAsync(IReadOnlyList<int> promptIds, GenerationOptions options, Action<GenerationResult>? onResult,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var channel = Channel.CreateBounded<GeneratedToken>(new BoundedChannelOptions(4) { SingleReader = true, SingleWriter = true, FullMode = BoundedChannelFullMode.Wait });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var producer = Task.Factory.StartNew(() =>
        {
            try
            {
                var result = Generate(promptIds, options, token => channel.Writer.WriteAsync(token, stop.Token).AsTask().GetAwaiter().GetResult(), stop.Token);
                onResult?.Invoke(result);
                channel.Writer.Complete();
            }
            catch (Exception e)
            {
                channel.Writer.Complete(e);
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        try
        {
            await foreach (var token in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
                yield return token;
        }
        finally
        {
            stop.Cancel(); // the reader left early or was cancelled: stop the producer too
            try { await producer.ConfigureAwait(false); } catch (OperationCanceledException) { }
        }
        cancellationToken.ThrowIfCancellationRequested();
    }

    private GenerationResult Run(IReadOnlyList<int> input, GenerationOptions options, Action<GeneratedToken>? onToken, CancellationToken cancellationToken, IReadOnlyList<int>? reportedPrompt = null)
    {
        if (Session.BatchSize != 1) throw new InvalidOperationException("Generator serves a batch of one; use BatchGenerator for batches");
        var state = new GenerationState(options, Session.Folder.EosTokenIds, Tokenizer, Session.VocabSize, _sequence, input);
        if (Session.Length + input.Count > Session.MaxLength)
            throw new ContextFullException($"the prompt needs {Session.Length + input.Count} positions but the max length is {Session.MaxLength}: shorten the prompt or export with a larger --max-length");

        if (options.Speculation is not null && !state.HasConstraint) Speculation.SpeculativeDecoding.CheckCanRollBack(Session, "target model");
        var clock = Stopwatch.StartNew();
        var ids = new long[input.Count];
        for (int i = 0; i < ids.Length; i++) ids[i] = input[i];
        var logits = Session.Append(ids, ids.Length, cancellationToken: cancellationToken);
        _sequence.AddRange(input);
        double prefillMs = clock.Elapsed.TotalMilliseconds, ttftMs = 0;
        var decodeClock = new Stopwatch();
        var step = new long[1];
        Speculation.SpeculationStats? speculation = null;
        var speculate = options.Speculation is { } chosen && !state.HasConstraint ? chosen : null;
        if (speculate is not null)
        {
            speculate.Drafter.Begin(Session, options.Sampling);
            var piece = state.Next(logits, Session.Length, Session.MaxLength);
            ttftMs = clock.Elapsed.TotalMilliseconds;
            if (piece is not null) onToken?.Invoke(piece);
            decodeClock.Start();
            if (state.StopReason is null)
                speculation = Speculation.SpeculativeDecoding.Run(Session, state, _sequence, speculate, options.MaxNewTokens, onToken, cancellationToken);
            else speculation = new Speculation.SpeculationStats(speculate.Drafter.Name, 0, 0, 0);
            decodeClock.Stop();
        }
        while (speculate is null)
        {
            var piece = state.Next(logits, Session.Length, Session.MaxLength);
            if (ttftMs == 0) ttftMs = clock.Elapsed.TotalMilliseconds; // the first sample
            if (piece is not null) onToken?.Invoke(piece);
            if (state.StopReason is not null) break;
            step[0] = state.Generated[^1];
            decodeClock.Start();
            logits = Session.Step(step, cancellationToken);
            decodeClock.Stop();
            _sequence.Add(state.Generated[^1]);
        }
        _pending = state.Pending;
        if (state.Tail() is { } tail) onToken?.Invoke(tail);
        var timings = new GenerationTimings(prefillMs, decodeClock.Elapsed.TotalMilliseconds, ttftMs, input.Count, Math.Max(0, state.Generated.Count - 1));
        return new GenerationResult([.. reportedPrompt ?? input], [.. state.Generated], state.Text, state.StopReason!.Value, timings, speculation);
    }
}

/// <summary>
/// Generation for a left-padded batch of prompts in one session; every row follows the rules of a
/// sequence generated alone (<see cref="GenerationState"/>: sampling with its own history and
/// constraint, EOS, max tokens, stop strings, the full context). Rows that stopped feed a pad token
/// until the last one stops.
/// </summary>
public sealed class BatchGenerator(DecoderSession session, TextTokenizer? tokenizer = null)
{
    private TextTokenizer? _tokenizer = tokenizer;

    /// <summary>Generates for every prompt; returns each row's generated ids (EOS excluded).</summary>
    public int[][] Generate(IReadOnlyList<int[]> prompts, GenerationOptions options, CancellationToken cancellationToken = default) =>
        GenerateResults(prompts, options, cancellationToken).Select(r => r.TokenIds).ToArray();

    /// <summary>Generates for every prompt; returns each row's whole result (text, stop reason, timings).</summary>
    public GenerationResult[] GenerateResults(IReadOnlyList<int[]> prompts, GenerationOptions options, CancellationToken cancellationToken = default)
    {
        int batch = session.BatchSize, vocab = session.VocabSize;
        if (prompts.Count != batch) throw new ArgumentException($"the session holds {batch} rows; got {prompts.Count} prompts", nameof(prompts));
        int longest = prompts.Max(p => p.Length);
        if (longest == 0) throw new ArgumentException("every prompt needs at least one token", nameof(prompts));
        if (longest > session.MaxLength)
            throw new ContextFullException($"the longest prompt needs {longest} positions but the max length is {session.MaxLength}: shorten the prompts");
        _tokenizer ??= TextTokenizer.Load(session.Folder.Directory, session.Folder.BosTokenId);
        var states = prompts.Select(p => new GenerationState(options, session.Folder.EosTokenIds, _tokenizer, vocab, [], p)).ToArray();
        var clock = Stopwatch.StartNew();
        session.Reset();
        var ids = new long[batch * longest];
        var mask = new long[batch * longest];
        for (int row = 0; row < batch; row++)
        {
            int pad = longest - prompts[row].Length;
            for (int t = 0; t < longest; t++)
            {
                ids[row * longest + t] = t < pad ? session.Folder.PadTokenId : prompts[row][t - pad];
                mask[row * longest + t] = t < pad ? 0 : 1;
            }
        }
        var logits = session.Append(ids, longest, mask, cancellationToken);
        double prefillMs = clock.Elapsed.TotalMilliseconds;
        var step = new long[batch];
        int steps = 0;
        while (true)
        {
            bool running = false;
            for (int row = 0; row < batch; row++)
            {
                var state = states[row];
                if (state.StopReason is null) state.Next(logits.Slice(row * vocab, vocab), session.Length, session.MaxLength);
                bool runs = state.StopReason is null;
                step[row] = runs ? state.Generated[^1] : session.Folder.PadTokenId;
                running |= runs;
            }
            if (!running) break;
            logits = session.Step(step, cancellationToken);
            steps++;
        }
        double decodeMs = clock.Elapsed.TotalMilliseconds - prefillMs;
        return states.Select((state, row) =>
        {
            state.Tail();
            var timings = new GenerationTimings(prefillMs, decodeMs, prefillMs, prompts[row].Length, steps);
            return new GenerationResult([.. prompts[row]], [.. state.Generated], state.Text, state.StopReason!.Value, timings);
        }).ToArray();
    }
}
