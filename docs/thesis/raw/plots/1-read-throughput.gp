$d0 << EOD
0.0 451.4594077856597
2.0 420.1564870866671
4.0 432.28025663843925
6.0 436.44959907989875
8.0 440.7519207566979
10.0 485.81645573439715
12.0 443.11467474292397
14.0 419.5002822838156
22.0 318.66936896299865
28.0 253.08641736494135
34.0 202.75458610717118
40.0 172.96091416920123
EOD
$d1 << EOD
0.0 5868.360479263498
EOD
$d2 << EOD
0.0 1229.8852901363457
EOD
$d3 << EOD
0.0 12015.875976133466
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
