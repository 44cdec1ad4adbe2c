$d0 << EOD
0.0 320.50584235201507
2.0 343.60434548040377
4.0 396.22961723006557
6.0 380.9919288973178
8.0 358.60551404688425
10.0 319.6472604577852
12.0 313.3034019145886
14.0 303.3489343162345
22.0 326.7009667969826
28.0 257.5229914866983
34.0 220.84837115437702
40.0 193.986912797201
EOD
$d1 << EOD
0.0 5099.591841417992
EOD
$d2 << EOD
0.0 1728.8801253276008
EOD
$d3 << EOD
0.0 11028.214739674255
EOD
$d4 << EOD
0.0 2400.0
2.0 1500.0
8.0 1000.0
25.0 500.0
40.0 350.0
EOD
$d5 << EOD
0.0 450.0
6.0 1.0
EOD
$d6 << EOD
0.0 2800.0
6.0 10.0
EOD
$d7 << EOD
0.0 20000.0
0.0 2300.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/1-read-throughput.png'
set title "#1 read throughput while the region is pulled"
set xlabel "RTT (ms)"
set ylabel "MiB/s (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set xrange [-1:42]
plot $d0 using 1:2 with linespoints  title "ferry: read while pulled (post-copy + background pull)", \
  $d1 using 1:2 with points pt 7 ps 1.5 title "ferry baseline: memory", \
  $d2 using 1:2 with points pt 9 ps 1.5 title "ferry baseline: mmap'd file, cold", \
  $d3 using 1:2 with points pt 11 ps 1.5 title "ferry baseline: mmap'd file, warm", \
  $d4 using 1:2 with linespoints dt 2 pt 8 ps 1.6 lw 1.5 title "thesis: managed mount", \
  $d5 using 1:2 with linespoints dt 2 pt 4 ps 1.6 lw 1.5 title "thesis: userfaultfd", \
  $d6 using 1:2 with linespoints dt 2 pt 6 ps 1.6 lw 1.5 title "thesis: direct mount", \
  $d7 using 1:2 with linespoints dt 2 pt 12 ps 1.6 lw 1.5 title "thesis: memory / disk"
