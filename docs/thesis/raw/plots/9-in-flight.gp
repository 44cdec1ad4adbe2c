$d0 << EOD
0.0 476.689751956871
5.0 21.50255945099536
10.0 11.457525955195429
15.0 7.830426377101336
20.0 5.934823567283794
30.0 3.9270590506347016
EOD
$d1 << EOD
0.0 476.6801373494231
5.0 156.832834616355
10.0 87.95376615731642
15.0 60.64465524368679
20.0 45.90159892639947
30.0 30.862000563035725
EOD
$d2 << EOD
0.0 719.791743554577
5.0 536.4331255602111
10.0 429.4883766688224
15.0 348.0098020875868
20.0 260.0399536761576
30.0 196.0762315221819
EOD
$d3 << EOD
0.0 636.972717095007
5.0 672.4957971902306
10.0 466.4659589979629
15.0 489.0934155279273
20.0 503.66966239675725
30.0 385.8962610396705
EOD
$d4 << EOD
0.0 635.606983266941
5.0 593.0126761833711
10.0 518.4800843819856
15.0 393.00590962986314
20.0 450.1786386212503
30.0 366.17356780449114
EOD
$d5 << EOD
5.0 1280.0
10.0 1220.0
15.0 1200.0
20.0 1210.0
30.0 1130.0
EOD
$d6 << EOD
5.0 1280.0
30.0 450.0
EOD
$d7 << EOD
5.0 360.0
30.0 70.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/9-in-flight.png'
set title "#9 requests in flight vs RTT (ferry: pipelining; thesis: pull workers)"
set xlabel "RTT (ms)"
set ylabel "MiB/s (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set xrange [-1:32]
plot $d0 using 1:2 with linespoints  title "ferry: 2 conns x 1 x 64 KiB = 0.125 MiB in flight", \
  $d1 using 1:2 with linespoints  title "ferry: 2 conns x 8 x 64 KiB = 1 MiB in flight", \
  $d2 using 1:2 with linespoints  title "ferry: 2 conns x 64 x 64 KiB = 8 MiB in flight", \
  $d3 using 1:2 with linespoints  title "ferry: 2 conns x 256 x 64 KiB = 32 MiB in flight", \
  $d4 using 1:2 with linespoints  title "ferry: 4 conns x 256 x 64 KiB = 64 MiB in flight", \
  $d5 using 1:2 with linespoints dt 2 pt 6 ps 1.6 lw 1.5 title "thesis: 16384 workers", \
  $d6 using 1:2 with linespoints dt 2 pt 8 ps 1.6 lw 1.5 title "thesis: 4092 workers", \
  $d7 using 1:2 with linespoints dt 2 pt 4 ps 1.6 lw 1.5 title "thesis: 512 workers"
