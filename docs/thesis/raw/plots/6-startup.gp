$d0 << EOD
0.0 21.384576999999997
2.0 47.655308
5.0 51.171632
10.0 73.387675
20.0 109.03515
30.0 151.626754
40.0 190.13076900000002
EOD
$d1 << EOD
0.0 8.004114151000977
2.0 7.003778457641602
5.0 5.002862930297852
10.0 6.002405166625977
20.0 6.002405166625977
30.0 8.004114151000977
40.0 8.004114151000977
EOD
$d2 << EOD
0.0 12.0
0.0 15.0
EOD
$d3 << EOD
0.0 85.0
7.0 40.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/6-startup.png'
set title "#6 start-up: connect to first usable chunk"
set xlabel "RTT (ms)"
set ylabel "ms"
set grid
set key below left Left reverse maxcols 2 height 1
set xrange [-1:42]
set y2label 'MiB on the wire before the first chunk'
set y2tics
set ytics nomirror
plot $d0 using 1:2 with linespoints  title "ferry: time to first usable chunk", \
  $d1 using 1:2 with linespoints axes x1y2 title "ferry: bytes on the wire by then (y2)", \
  $d2 using 1:2 with linespoints dt 2 pt 6 ps 1.6 lw 1.5 title "thesis: direct mount init, polling / udev", \
  $d3 using 1:2 with points axes x1y2 pt 8 ps 1.6 title "thesis: MB pulled before the device opened (y2)"
