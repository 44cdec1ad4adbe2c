$d0 << EOD
4.0 274.30570255039385
16.0 373.13831093672974
64.0 534.9879037981074
256.0 543.0247995013855
1024.0 533.2771362924458
2048.0 478.05442366764584
EOD
$d1 << EOD
4.0 288.9886405428883
16.0 377.6710564173482
64.0 401.25293402101454
256.0 365.44560940616344
1024.0 369.89373546351334
2048.0 366.9812391621552
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
