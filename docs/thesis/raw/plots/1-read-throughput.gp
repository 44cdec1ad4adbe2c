$d0 << EOD
0.0 429.1788900968511
2.0 506.9914129042397
4.0 460.2965923969964
6.0 504.9449781116016
8.0 598.9471585186418
10.0 485.07639235670786
12.0 458.9569824174094
14.0 425.7581489217164
22.0 306.3862349734936
28.0 254.70994169118993
34.0 217.2362550453495
40.0 188.62987610274442
EOD
$d1 << EOD
0.0 5747.946269276014
EOD
$d2 << EOD
0.0 1254.292768002678
EOD
$d3 << EOD
0.0 5272.172037124438
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
