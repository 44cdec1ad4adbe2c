$d0 << EOD
-0.18 9.01310152567155
0.8200000000000001 10.660452417339012
1.82 5.490358802330316
2.82 1.3534412610591333
3.82 0.7460271943988366
4.82 1231.366034841588
EOD
$d1 << EOD
0.18 9.242391918357573
1.18 7.99904038497312
2.18 12.341276062467886
3.18 1.3725879487781516
4.18 0.6560471985490717
5.18 1495.075263253604
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/2-hashing.png'
set title "#2 one dirty-detection pass (thesis: not measured; its prototype used CRC32 per block)"
set xlabel ""
set ylabel "GB/s of region covered per second (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set style fill solid 0.6
set boxwidth 0.35
set xtics ("XXH3-64" 0, "XXH3-128" 1, "CRC32C" 2, "SHA-256" 3, "BLAKE2b-256" 4, "exact (uffd-wp)" 5) rotate by -20
set xrange [-0.6:5.6]
plot $d0 using 1:2 with boxes  title "4 KiB chunks", \
  $d1 using 1:2 with boxes  title "64 KiB chunks"
