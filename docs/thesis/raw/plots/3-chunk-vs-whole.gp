$d0 << EOD
-0.18 9.242391918357573
0.8200000000000001 7.99904038497312
1.82 12.341276062467886
2.82 1.3725879487781516
3.82 0.6560471985490717
EOD
$d1 << EOD
0.18 8.000529991926731
1.18 8.375124990966105
2.18 14.300641611245682
3.18 1.3636658514860962
4.18 0.7248597754145931
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/3-chunk-vs-whole.png'
set title "#3 per-chunk vs whole-region hashing (thesis: not measured)"
set xlabel ""
set ylabel "GB/s (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set style fill solid 0.6
set boxwidth 0.35
set xtics ("XXH3-64" 0, "XXH3-128" 1, "CRC32C" 2, "SHA-256" 3, "BLAKE2b-256" 4)
set xrange [-0.6:4.6]
plot $d0 using 1:2 with boxes  title "per 64 KiB chunk", \
  $d1 using 1:2 with boxes  title "whole region, one digest"
