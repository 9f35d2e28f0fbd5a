namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// The incremental recognizer: a pushdown automaton over <see cref="ByteNfa"/>. A
/// <see cref="MatchState"/> is the set of live configurations (NFA state + call stack) after the
/// bytes so far. States and stacks are interned and immutable, so a sequence's state is one
/// reference (cloning is free), equal states are one object, and each state memoises its
/// successor per byte: after warm-up, advancing by a byte is an array lookup (a lazily built DFA).
/// Configurations that could no longer finish are dropped, so every live state can still reach
/// the end of the grammar; that is what keeps a constrained sequence from a dead end.
/// </summary>
public sealed class GrammarMatcher
{
    private const int Infinite = int.MaxValue;
    /// <summary>Interned states kept before the memo is dropped (memory bound for long runs).</summary>
    private const int MaxInternedStates = 50_000;

    private readonly ByteNfa _nfa;
    private readonly int[] _dist;
    private readonly int _maxCallsWithoutByte;
    private readonly Dictionary<StackKey, CallStack> _stacks = new();
    private readonly Dictionary<ConfigKey, MatchState> _states = new();
    private readonly object _gate = new();
    private int _nextStackId;
    // Scratch for Advance and Closure (used under _gate only).
    private readonly List<(int, CallStack?)> _moved = [];
    private readonly Dictionary<(int, CallStack?), MatchState> _seedClosures = new();
    private readonly HashSet<(int, CallStack?)> _seen = new(), _kept = new();
    private readonly Stack<(int State, CallStack? Stack, int Calls)> _work = new();

    /// <param name="usableBytes">Bytes that closing paths may use (those with a one-byte token).</param>
    public GrammarMatcher(Grammar grammar, ByteSet usableBytes)
    {
        Description = grammar.Description;
        _nfa = new ByteNfa(grammar);
        _dist = _nfa.DistanceToAccept(usableBytes);
        // A shortest path needs at most one call of each rule in a row without a byte in between;
        // deeper byte-free call chains are left recursion and add nothing.
        _maxCallsWithoutByte = _nfa.RuleCount + 1;
        if (_dist[_nfa.RuleStart[0]] == Infinite)
            throw new GrammarException($"{Description}: no output satisfies it (with this vocabulary's one-byte tokens)");
        Start = Closure([(_nfa.RuleStart[0], null)]);
    }

    public string Description { get; }
    public MatchState Start { get; }
    public int NfaStates => _nfa.StateCount;

    /// <summary>The state after <paramref name="b"/>, or null when no continuation of the grammar begins with it.</summary>
    public MatchState? Advance(MatchState state, byte b)
    {
        var known = state.Next?[b];
        if (known is not null) return ReferenceEquals(known, MatchState.Dead) ? null : known;
        lock (_gate)
        {
            state.Next ??= new MatchState?[256];
            _moved.Clear();
            foreach (var (nfaState, stack) in state.Configurations)
                foreach (var (set, target) in _nfa.ByteEdges(nfaState))
                    if (set.Contains(b)) _moved.Add((target, stack));
            MatchState next;
            if (_moved.Count == 0) next = MatchState.Dead;
            else if (_moved.Count == 1)
            {
                // One edge's byte class sends many bytes to the same place: close each target once.
                if (!_seedClosures.TryGetValue(_moved[0], out next!))
                {
                    next = Closure(_moved);
                    if (_seedClosures.Count >= MaxInternedStates) _seedClosures.Clear();
                    _seedClosures[_moved[0]] = next;
                }
            }
            else next = Closure(_moved);
            if (next.Configurations.Length == 0 && !next.IsComplete) next = MatchState.Dead;
            state.Next[b] = next;
            return ReferenceEquals(next, MatchState.Dead) ? null : next;
        }
    }

    /// <summary>The state after <paramref name="bytes"/>, or null if the grammar refuses them.</summary>
    public MatchState? Advance(MatchState state, ReadOnlySpan<byte> bytes)
    {
        MatchState? at = state;
        foreach (var b in bytes)
        {
            at = Advance(at, b);
            if (at is null) return null;
        }
        return at;
    }

    /// <summary>Whether the whole of <paramref name="text"/>'s UTF-8 bytes is a complete sentence of the grammar.</summary>
    public bool Matches(ReadOnlySpan<byte> bytes) => Advance(Start, bytes) is { IsComplete: true };

    // Follows epsilon edges, calls (push the return state) and rule ends (pop), and keeps the
    // configurations that wait on a byte and can still finish.
    private MatchState Closure(List<(int State, CallStack? Stack)> seeds)
    {
        lock (_gate)
        {
            var seen = _seen;
            var kept = _kept;
            var work = _work;
            seen.Clear();
            kept.Clear();
            work.Clear();
            bool complete = false;
            foreach (var (s, stack) in seeds) work.Push((s, stack, 0));
            while (work.Count > 0)
            {
                var (s, stack, calls) = work.Pop();
                if (!seen.Add((s, stack))) continue;
                if (Distance(s, stack) == Infinite) continue;
                if (_nfa.ByteEdges(s).Count > 0) kept.Add((s, stack));
                foreach (var target in _nfa.EpsilonEdges(s)) work.Push((target, stack, calls));
                if (calls < _maxCallsWithoutByte)
                    foreach (var (rule, ret) in _nfa.CallEdges(s)) work.Push((_nfa.RuleStart[rule], Push(stack, ret), calls + 1));
                int ended = _nfa.AcceptOf[s];
                if (ended >= 0)
                {
                    if (stack is null) complete |= ended == 0;
                    else work.Push((stack.Return, stack.Parent, calls));
                }
            }
            var configurations = kept.ToArray();
            Array.Sort(configurations, CompareConfigurations);
            var key = new ConfigKey(configurations, complete);
            if (_states.TryGetValue(key, out var existing)) return existing;
            if (_states.Count >= MaxInternedStates) _states.Clear();
            int best = complete ? 0 : Infinite;
            foreach (var (s, stack) in configurations) best = Math.Min(best, Distance(s, stack));
            var state = new MatchState(configurations, complete, best);
            _states[key] = state;
            return state;
        }
    }

    private static int CompareConfigurations((int State, CallStack? Stack) a, (int State, CallStack? Stack) b) =>
        a.State != b.State ? a.State.CompareTo(b.State) : (a.Stack?.Id ?? -1).CompareTo(b.Stack?.Id ?? -1);

    private int Distance(int state, CallStack? stack)
    {
        long d = _dist[state];
        if (d == Infinite) return Infinite;
        d += stack?.Distance ?? 0;
        return d >= Infinite ? Infinite : (int)d;
    }

    private CallStack Push(CallStack? parent, int ret)
    {
        var key = new StackKey(ret, parent);
        if (_stacks.TryGetValue(key, out var existing)) return existing;
        long distance = (long)_dist[ret] + (parent?.Distance ?? 0);
        var stack = new CallStack(ret, parent, _nextStackId++, (int)Math.Min(distance, Infinite));
        if (_stacks.Count < MaxInternedStates) _stacks[key] = stack;
        return stack;
    }

    private readonly record struct StackKey(int Return, CallStack? Parent);

    private sealed class ConfigKey((int, CallStack?)[] configurations, bool complete) : IEquatable<ConfigKey>
    {
        private readonly (int, CallStack?)[] _configurations = configurations;
        private readonly bool _complete = complete;
        private readonly int _hash = Hash(configurations, complete);

        private static int Hash((int, CallStack?)[] configurations, bool complete)
        {
            var hash = new HashCode();
            hash.Add(complete);
            foreach (var (s, stack) in configurations)
            {
                hash.Add(s);
                hash.Add(stack?.Id ?? -1);
            }
            return hash.ToHashCode();
        }

        public bool Equals(ConfigKey? other) => other is not null && other._hash == _hash && other._complete == _complete
            && other._configurations.AsSpan().SequenceEqual(_configurations);
        public override bool Equals(object? obj) => Equals(obj as ConfigKey);
        public override int GetHashCode() => _hash;
    }
}

/// <summary>An interned call stack: the return state on top, and the fewest bytes to finish every frame below.</summary>
internal sealed class CallStack(int ret, CallStack? parent, int id, int distance)
{
    public int Return { get; } = ret;
    public CallStack? Parent { get; } = parent;
    public int Id { get; } = id;
    public int Distance { get; } = distance;
}

/// <summary>
/// Where the recognizer is after some bytes: immutable and shared. <see cref="IsComplete"/>: the
/// bytes so far are a whole sentence; <see cref="CanContinue"/>: some byte may follow;
/// <see cref="BytesToFinish"/>: the fewest further bytes (each with a one-byte token) that complete it.
/// </summary>
public sealed class MatchState
{
    internal static readonly MatchState Dead = new([], false, int.MaxValue);

    internal MatchState((int, CallStack?)[] configurations, bool complete, int bytesToFinish)
    {
        Configurations = configurations;
        IsComplete = complete;
        BytesToFinish = bytesToFinish;
    }

    internal (int State, CallStack? Stack)[] Configurations { get; }
    /// <summary>The successor per byte once computed (Dead where none); allocated on first use.</summary>
    internal MatchState?[]? Next { get; set; }
    /// <summary>The token mask memoised for this state (per token table), set by <see cref="GrammarConstraint"/>.</summary>
    internal object? Mask { get; set; }

    public bool IsComplete { get; }
    public bool CanContinue => Configurations.Length > 0;
    public int BytesToFinish { get; }
}
