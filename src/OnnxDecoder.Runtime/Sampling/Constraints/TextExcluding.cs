namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// The sentences of a regular grammar that do not contain a marker anywhere: the product of the grammar's automaton with
/// the marker's Knuth-Morris-Pratt automaton (state j: the last j bytes read are the marker's first j; reaching its whole
/// length is refused). A raw-text value closed by a marker (Qwen3-Coder's "&lt;/parameter&gt;") needs this whenever the
/// value has constraints of its own (a pattern, a length), since a match may run into the marker or across its edges.
/// Built over bytes, so any marker and any byte grammar work; the result is an <see cref="AutomatonNode"/> trimmed to the
/// states that are reachable and can still finish.
/// </summary>
public static class TextExcluding
{
    /// <summary>Product states allowed (each becomes a state of the grammar's NFA, which caps them at
    /// <see cref="ByteNfa.MaxStates"/>).</summary>
    public const int MaxStates = ByteNfa.MaxStates / 4;

    /// <summary>The sentences of <paramref name="regular"/> (bytes, sequences, choices, repeats and automata: no rules, no
    /// members) without <paramref name="marker"/>; throws when none is left or the product outgrows <see cref="MaxStates"/>.</summary>
    public static GrammarNode Intersect(GrammarNode regular, string marker)
    {
        byte[] markerBytes = System.Text.Encoding.UTF8.GetBytes(marker);
        if (markerBytes.Length == 0) throw new ArgumentException("the marker must not be empty", nameof(marker));
        var nfa = new ByteNfa(new Grammar { Description = "text" }.WithRoot(regular));
        for (int s = 0; s < nfa.StateCount; s++)
            if (nfa.CallEdges(s).Count > 0) throw new ArgumentException("the grammar must be regular (no rule calls)", nameof(regular));
        var toward = MarkerSteps(markerBytes);
        var moves = new Dictionary<int, ((ByteSet Set, int Target)[] Edges, bool Accepting)>();

        // Forward: the product states reachable from (start, 0), numbered as found; each state's edges are appended
        // when it is expanded, in order, so edges edgeStart[s]..edgeStart[s+1]-1 are state s's.
        var index = new Dictionary<(int State, int Matched), int>();
        var found = new List<(int State, int Matched)>();
        var accepting = new List<bool>();
        var edgeStart = new List<int>();
        var edgeSets = new List<ByteSet>();
        var edgeTargets = new List<int>();
        int Id(int state, int matched)
        {
            if (index.TryGetValue((state, matched), out int id)) return id;
            if (found.Count >= MaxStates)
                throw new GrammarException(
                    $"text without '{marker}' expands to more than {MaxStates} states: lower maxLength or the pattern's bounds");
            index[(state, matched)] = found.Count;
            found.Add((state, matched));
            return found.Count - 1;
        }
        Id(nfa.RuleStart[0], 0);
        for (int at = 0; at < found.Count; at++)
        {
            var (state, matched) = found[at];
            var (stateEdges, accepts) = Moves(nfa, state, moves);
            accepting.Add(accepts);
            edgeStart.Add(edgeSets.Count);
            foreach (var (set, target) in stateEdges)
                foreach (var (next, bytes) in toward[matched])
                {
                    var part = set.Intersect(bytes);
                    if (part.IsEmpty) continue;
                    edgeSets.Add(part);
                    edgeTargets.Add(Id(target, next));
                }
        }
        int states = found.Count;
        edgeStart.Add(edgeSets.Count);

        // Backward: keep the states from which an accepting one is reachable (incoming edges grouped by target).
        var incomingStart = new int[states + 1];
        foreach (int target in edgeTargets) incomingStart[target + 1]++;
        for (int s = 0; s < states; s++) incomingStart[s + 1] += incomingStart[s];
        var incoming = new int[edgeTargets.Count];
        var filled = incomingStart[..states];
        for (int s = 0; s < states; s++)
            for (int e = edgeStart[s]; e < edgeStart[s + 1]; e++) incoming[filled[edgeTargets[e]]++] = s;
        var live = new bool[states];
        var work = new Stack<int>();
        for (int s = 0; s < states; s++)
            if (accepting[s]) { live[s] = true; work.Push(s); }
        while (work.Count > 0)
        {
            int s = work.Pop();
            for (int i = incomingStart[s]; i < incomingStart[s + 1]; i++)
                if (!live[incoming[i]]) { live[incoming[i]] = true; work.Push(incoming[i]); }
        }
        if (!live[0]) throw new GrammarException($"every text it allows contains '{marker}'");

        var renumbered = TopologicalNumbers(edgeStart, edgeTargets, live, out int count);
        var automatonEdges = new (ByteSet, int)[count][];
        var automatonAccepting = new bool[count];
        var kept = new List<(ByteSet, int)>();
        for (int s = 0; s < states; s++)
        {
            if (renumbered[s] < 0) continue;
            kept.Clear();
            for (int e = edgeStart[s]; e < edgeStart[s + 1]; e++)
                if (renumbered[edgeTargets[e]] >= 0) kept.Add((edgeSets[e], renumbered[edgeTargets[e]]));
            automatonEdges[renumbered[s]] = [.. kept];
            automatonAccepting[renumbered[s]] = accepting[s];
        }
        return new AutomatonNode(0, automatonEdges, automatonAccepting);
    }

    // The live states numbered in reverse postorder from the start (0), so that edges outside cycles lead to higher
    // numbers: the NFA's distance fixpoint, which sweeps states from the highest down, then settles in few sweeps
    // instead of one sweep per character of a length bound. Dead states get -1.
    private static int[] TopologicalNumbers(List<int> edgeStart, List<int> edgeTargets, bool[] live, out int count)
    {
        var postorder = new List<int>();
        var visited = new bool[live.Length];
        var work = new Stack<(int State, int Edge)>();
        visited[0] = true;
        work.Push((0, edgeStart[0]));
        while (work.Count > 0)
        {
            var (state, edge) = work.Pop();
            if (edge == edgeStart[state + 1])
            {
                postorder.Add(state);
                continue;
            }
            work.Push((state, edge + 1));
            int target = edgeTargets[edge];
            if (live[target] && !visited[target])
            {
                visited[target] = true;
                work.Push((target, edgeStart[target]));
            }
        }
        var numbers = new int[live.Length];
        Array.Fill(numbers, -1);
        count = postorder.Count;
        for (int i = 0; i < count; i++) numbers[postorder[count - 1 - i]] = i;
        return numbers;
    }

    // Per matched count j, the next counts k (below the marker's length) some byte takes j to, with those bytes. The
    // missing k (the whole marker) is the refused step.
    private static (int Next, ByteSet Bytes)[][] MarkerSteps(byte[] marker)
    {
        int length = marker.Length;
        var next = new int[length][];
        for (int j = 0; j < length; j++) next[j] = new int[256];
        next[0][marker[0]] = 1;
        // fallback: the matched count after the marker's bytes 1..j (where a mismatch at j+1 restarts).
        int fallback = 0;
        for (int j = 1; j < length; j++)
        {
            Array.Copy(next[fallback], next[j], 256);
            next[j][marker[j]] = j + 1;
            fallback = next[fallback][marker[j]];
        }
        var steps = new (int, ByteSet)[length][];
        for (int j = 0; j < length; j++)
        {
            var byNext = new ByteSet[length];
            for (int b = 0; b < 256; b++)
                if (next[j][b] < length) byNext[next[j][b]] = byNext[next[j][b]].Union(ByteSet.Of((byte)b));
            steps[j] = [.. Enumerable.Range(0, length).Where(k => !byNext[k].IsEmpty).Select(k => (k, byNext[k]))];
        }
        return steps;
    }

    // A state's byte steps after its epsilon closure (edges to one target merged), and whether the closure accepts.
    private static ((ByteSet Set, int Target)[] Edges, bool Accepting) Moves(ByteNfa nfa, int state,
        Dictionary<int, ((ByteSet, int)[], bool)> memo)
    {
        if (memo.TryGetValue(state, out var known)) return known;
        var seen = new HashSet<int> { state };
        var work = new Stack<int>();
        work.Push(state);
        var byTarget = new Dictionary<int, ByteSet>();
        bool accepts = false;
        while (work.Count > 0)
        {
            int s = work.Pop();
            accepts |= nfa.AcceptOf[s] == 0;
            foreach (var (set, target) in nfa.ByteEdges(s))
                byTarget[target] = byTarget.TryGetValue(target, out var existing) ? existing.Union(set) : set;
            foreach (int target in nfa.EpsilonEdges(s))
                if (seen.Add(target)) work.Push(target);
        }
        ((ByteSet, int)[], bool) result = ([.. byTarget.Select(e => (e.Value, e.Key))], accepts);
        memo[state] = result;
        return result;
    }
}
