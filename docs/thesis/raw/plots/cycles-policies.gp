$d0 << EOD
-0.27 702.2222222222222
0.73 468.0
1.73 676.8888888888889
2.73 8.166666666666666
EOD
$d1 << EOD
0.0 146.13546074761285
1.0 2345.619234085083
2.0 1149.358737733629
3.0 234.28802320692273
EOD
$d2 << EOD
0.27 2.35
1.27 1.677777777777778
2.27 1.7944444444444443
3.27 2.038888888888889
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/cycles-policies.png'
set title "Finalize policies on cyclic workloads (committed evaluation, 128 MiB regions)"
set xlabel ""
set ylabel "mean"
set grid
set key below left Left reverse maxcols 2 height 1
set style fill solid 0.6
set boxwidth 0.25
set logscale y
set xtics ("immediate" 0, "threshold" 1, "local-minimum" 2, "cycle" 3)
set xrange [-0.6:3.6]
plot $d0 using 1:2 with boxes  title "stale chunks at finalize", \
  $d1 using 1:2 with boxes  title "MiB transferred", \
  $d2 using 1:2 with boxes  title "downtime (ms)"
