$d0 << EOD
4.0 354.12398834753543
16.0 375.6096291002809
64.0 592.1182364392388
256.0 618.1318608350678
1024.0 566.9453900128955
2048.0 822.4305070316202
EOD
$d1 << EOD
4.0 248.58258758805206
16.0 251.2753013321551
64.0 337.47068585933937
256.0 317.9167803550319
1024.0 274.43853381504897
2048.0 307.239656036884
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
