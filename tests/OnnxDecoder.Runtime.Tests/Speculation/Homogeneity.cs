namespace OnnxDecoder.Runtime.Tests.Speculation;

/// <summary>The speculation tests' judge of "same distribution".</summary>
internal static class Homogeneity
{
    /// <summary>Chi-square homogeneity of two count vectors, bins with fewer than 10 pooled counts merged;
    /// returns (statistic, critical value at p = 0.001 by the Wilson-Hilferty approximation).</summary>
    public static (double Statistic, double Critical) ChiSquare(int[] a, int[] b)
    {
        var bins = new List<(double A, double B)>();
        double restA = 0, restB = 0;
        for (int i = 0; i < a.Length; i++)
            if (a[i] + b[i] >= 10) bins.Add((a[i], b[i]));
            else { restA += a[i]; restB += b[i]; }
        if (restA + restB > 0) bins.Add((restA, restB));
        double na = a.Sum(), nb = b.Sum(), statistic = 0;
        foreach (var (x, y) in bins)
        {
            double pooled = (x + y) / (na + nb);
            statistic += Math.Pow(x - na * pooled, 2) / (na * pooled) + Math.Pow(y - nb * pooled, 2) / (nb * pooled);
        }
        int df = Math.Max(1, bins.Count - 1);
        const double z = 3.0902; // standard normal quantile at 0.999
        double h = 2.0 / (9 * df);
        return (statistic, df * Math.Pow(1 - h + z * Math.Sqrt(h), 3));
    }
}
