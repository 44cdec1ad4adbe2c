$d0 << EOD
4.0 341.6950951943493
16.0 318.788369355683
64.0 373.1214283461399
256.0 342.88926668301303
1024.0 414.96170536708314
2048.0 392.18962692018033
EOD
$d1 << EOD
4.0 199.2342613795284
16.0 224.9689406650219
64.0 246.60776663648844
256.0 286.53481952994645
1024.0 284.5140450098997
2048.0 292.862462679808
EOD
$d2 << EOD
4.0 450.0
4.0 300.0
EOD
$d3 << EOD
4.0 230.0
4.0 240.0
EOD
$d4 << EOD
4.0 490.0
4.0 30.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/5-chunk-size.png'
set title "#5 pull throughput against chunk size"
set xlabel "chunk size (KiB, log)"
set ylabel "MiB/s"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale x 2
set xrange [3:2800]
plot $d0 using 1:2 with linespoints  title "ferry: pre-copy pull, 0 ms RTT", \
  $d1 using 1:2 with linespoints  title "ferry: pre-copy pull, 20 ms RTT", \
  $d2 using 1:2 with linespoints dt 2 pt 6 ps 1.6 lw 1.5 title "thesis: managed, server-side chunking, 0 / 20 ms", \
  $d3 using 1:2 with linespoints dt 2 pt 8 ps 1.6 lw 1.5 title "thesis: managed, client-side chunking, 0 / 20 ms", \
  $d4 using 1:2 with linespoints dt 2 pt 4 ps 1.6 lw 1.5 title "thesis: direct, server-side / client-side, 0 ms"
